"""Our own implementation of the Wav2Lip generator (Prajwal et al., ACM MM 2020).

The architecture follows the published model so that the authors' checkpoints load with a
strict key check; the code is ours. The *weights* are not: they were trained on LRS2 and may be
used for research/personal, non-commercial purposes only. Nothing here downloads them.

Modules:
    model       the generator network (``Wav2Lip``)
    audio       the mel-spectrogram front end and per-video-frame mel windows
    checkpoint  loading training checkpoints, TorchScript files and bare state dicts
    avatar      Wav2Lip's step of a stored avatar: padded face boxes and 96x96 crops (kept in
                the avatar store's entry; the avatar itself is services/avatar's)
    inference   batched generation and feathered paste-back

Errors::

    Wav2LipError
     +-- Wav2LipCheckpointError   a file that holds no usable generator weights
     +-- AvatarError              no face found, unreadable avatar source
"""

from wav2lip.errors import AvatarError, Wav2LipCheckpointError, Wav2LipError
from wav2lip.model import Wav2Lip

__all__ = ["AvatarError", "Wav2Lip", "Wav2LipCheckpointError", "Wav2LipError"]
