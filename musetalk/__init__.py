"""MuseTalk 1.5 lip-sync: our own loaders and realtime pipeline around diffusers/transformers.

MuseTalk is single-step latent inpainting, not diffusion: a Stable-Diffusion-shaped UNet takes the
VAE latents of the avatar's face crop (lower half masked ⊕ full crop, 8 channels at 32x32) and the
whisper-tiny features of 200 ms of audio (cross-attention, 50x384 per frame), runs once at
timestep 0, and the VAE decodes the predicted latents into a 256x256 face.

Modules:
* ``models``: find and load the three checkpoints (UNet, sd-vae, whisper-tiny), pick precision;
* ``audio_features``: whisper features per clause, sliced per video frame;
* ``avatar``: face boxes, crops, latents and blend masks of a stored avatar's loop (kept in its
  avatar-store entry by services/lipsync/avatar_steps.py);
* ``inference``: batched UNet + VAE decode and the masked paste-back.

Weights (MIT) come from ``python main.py fetch`` (entries musetalk-v15, musetalk-sd-vae,
musetalk-whisper-tiny); nothing here downloads anything.

A model library: nothing here imports ``services``. Errors::

    MuseTalkError
     +-- MuseTalkModelMissing   a checkpoint missing, unreadable or not matching its config
                                (the message names the file and the fetch command)
     +-- MuseTalkAvatarError    an avatar it cannot prepare (no face, a face box too small)
"""
