"""Command line like upstream's inference.py:

    python -m wav2lip --checkpoint CKPT --face IMAGE_OR_VIDEO --audio WAV --outfile OUT.mp4

Writes an H.264 mp4 with the audio (AAC) muxed in, using PyAV. Frame i shows the mouth for the
audio [t_i, t_i + 200 ms], as upstream. ``--face ''`` uses the bundled astronaut photo.

The face is prepared by the one avatar store (services/avatar/), as the page's uploads and the
lip-sync service are: the same reading and normalising (long side <= 720 px, 25 fps, a video
at most 10 s as a forward loop), the same checks and clear refusals, the same face detector
setting (``--face-detector``), and the same cache under ``--cache-dir`` (``<dir>/avatars/<id>/``,
Wav2Lip's crops a step file in that entry). This command line is an application on top of the
model library: it is the one part of ``wav2lip/`` that imports ``services``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import av
import numpy as np
from tqdm import tqdm

from wav2lip.audio import melspectrogram, pcm16_to_float, upstream_mel_chunks
from services.avatar.errors import AvatarError as StoreError
from services.avatar.library import default_avatar, open_store
from services.face import FaceDetectorError, face_detector
from services.settings_util import models_dir
from wav2lip.avatar import DEFAULT_PADS, AvatarOptions, from_store
from wav2lip.checkpoint import load_generator
from wav2lip.errors import Wav2LipError
from wav2lip.inference import Wav2LipGenerator, active_frames, render_batch, select_precision

SAMPLE_RATE = 16_000


def read_audio_pcm16(path: str) -> np.ndarray:
    """Any audio file PyAV can decode -> mono 16 kHz int16."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    with av.open(path) as container:
        if not container.streams.audio:
            raise Wav2LipError(f"{path}: no audio stream")
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        raise Wav2LipError(f"{path}: the audio stream is empty")
    return np.concatenate(chunks).astype(np.int16)


def write_mp4(
    path: str, frames_bgr, n_frames: int, fps: float, pcm: np.ndarray, height: int, width: int
) -> None:
    # yuv420p needs even dimensions: drop a trailing odd row/column.
    height -= height % 2
    width -= width % 2
    with av.open(path, mode="w") as container:
        video = container.add_stream("libx264", rate=round(fps) if float(fps).is_integer() else fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for image in tqdm(frames_bgr, total=n_frames, unit="frame", desc="wav2lip"):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(image[:height, :width]), format="bgr24"
            )
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        samples = pcm.reshape(1, -1)
        step = 1024 * 16
        for start in range(0, samples.shape[1], step):
            chunk = np.ascontiguousarray(samples[:, start : start + step])
            aframe = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            aframe.sample_rate = SAMPLE_RATE
            aframe.pts = start
            for packet in audio.encode(aframe):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m wav2lip",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", required=True, help="generator weights you supply (.pth or TorchScript .pt)"
    )
    p.add_argument("--face", required=True, help="photo or video of the face ('' = astronaut)")
    p.add_argument("--audio", required=True, help="speech to lip-sync (any format PyAV reads)")
    p.add_argument("--outfile", default="results/result_voice.mp4")
    p.add_argument("--batch-size", type=int, default=16, help="frames per model call")
    p.add_argument(
        "--pads",
        type=int,
        nargs=4,
        default=list(DEFAULT_PADS),
        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
    )
    p.add_argument(
        "--box",
        type=int,
        nargs=4,
        default=None,
        metavar=("Y1", "Y2", "X1", "X2"),
        help="fixed face box instead of detection",
    )
    p.add_argument(
        "--nosmooth", action="store_true", help="do not average face boxes over 5 frames"
    )
    p.add_argument("--fps", type=float, default=25.0, help="output rate for a still image")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--face-detector", choices=("haar", "s3fd", "auto"), default="haar",
                   help="as AVATAR_FACE_DETECTOR: haar (bundled), s3fd (fetched), auto")
    p.add_argument("--cache-dir", default="",
                   help="the avatar store's folder (AVATAR_CACHE_DIR): the prepared face is kept for next time")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model, _info = load_generator(args.checkpoint)
        options = AvatarOptions(
            pads=tuple(args.pads),
            smooth=not args.nosmooth,
            box=tuple(args.box) if args.box else None,
        )
        store = open_store(args.cache_dir)
        entry = default_avatar(store, args.face)
        detector = face_detector(args.face_detector, models_dir(os.environ), args.device)
        avatar = from_store(store, entry, entry.face_finder(detector, "bgr"), detector.name, options)
        fps = args.fps if len(avatar) == 1 else avatar.fps
        pcm = read_audio_pcm16(args.audio)
        audio = pcm16_to_float(pcm)
        chunks = upstream_mel_chunks(melspectrogram(audio), fps)
        n_frames = len(chunks)
        precision = select_precision(args.device)
        generator = Wav2LipGenerator(model, precision, args.batch_size)
        speaking = active_frames(audio, n_frames, fps, SAMPLE_RATE)
        print(
            f"{n_frames} frames at {fps:g} fps on {precision.device} {precision.dtype}",
            file=sys.stderr,
        )

        def rendered():
            for start in range(0, n_frames, args.batch_size):
                stop = min(start + args.batch_size, n_frames)
                loop = [i % len(avatar) for i in range(start, stop)]  # shorter videos loop forward
                yield from render_batch(
                    generator, avatar, loop, chunks[start:stop], speaking[start:stop]
                )

        height, width = avatar.frame_size
        write_mp4(args.outfile, rendered(), n_frames, fps, pcm, height, width)
    except (Wav2LipError, StoreError, FaceDetectorError, OSError, av.error.FFmpegError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.outfile}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
