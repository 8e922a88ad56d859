"""The bottom layer that the model libraries and the services share.

``wav2lip/`` and ``musetalk/`` are model libraries: they must not import ``services/`` (the one
exception is ``python -m wav2lip``, wav2lip/__main__.py, an application that takes its avatar
from the avatar store). What they
and the services both need lives here, so that each fact has one home:

* ``media``: the media-time invariant (16 kHz audio, 25 fps video, 640 samples per frame);
  no dependencies, so the gateway can import it without torch;
* ``device``: ``pick_device``, the one reading of ``AVATAR_DEVICE`` (auto | cpu | cuda), and
  ``cpu_has_native_bf16``;
* ``files``: ``file_sha256`` (model checksums, cache keys) and ``save_npz_atomically`` (caches
  that a crash never leaves half-written);
* ``haar``: OpenCV's bundled cascades and the one rule for the avatar's face (the avatar store's
  face boxes, the ``haar`` face detector, the animated avatar's features);
* ``faces``: a frame without a face borrows its neighbour's box (the store and both engine steps).

Nothing here imports ``services``, ``wav2lip`` or ``musetalk``.
"""
