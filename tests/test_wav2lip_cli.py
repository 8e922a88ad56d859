"""``python -m wav2lip`` end to end: default avatar, random weights, real mp4 out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch

from wav2lip.model import Wav2Lip

REPO = Path(__file__).resolve().parents[1]


def _upstream_frame_count(n_samples: int) -> int:
    mel_frames = 1 + n_samples // 200
    i = 0
    while int(i * 80 / 25) + 16 <= mel_frames:
        i += 1
    return i + 1  # plus the final clamped window


@pytest.mark.slow
def test_cli_writes_h264_with_audio(tmp_path: Path) -> None:
    torch.manual_seed(2)
    ckpt = tmp_path / "wav2lip.pth"
    torch.save(
        {"state_dict": {"module." + k: v for k, v in Wav2Lip().state_dict().items()}},
        ckpt,
        _use_new_zipfile_serialization=False,
    )
    t = np.arange(16000) / 16000
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, 0.4 * np.sin(2 * np.pi * 200 * t) * (t > 0.2), 16000, subtype="PCM_16")
    out = tmp_path / "out.mp4"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wav2lip",
            "--checkpoint",
            str(ckpt),
            "--face",
            "",
            "--audio",
            str(wav),
            "--outfile",
            str(out),
            "--batch-size",
            "8",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "non-commercial" in proc.stderr
    # The face was prepared by the one avatar store: its entry, with Wav2Lip's step inside.
    entry = tmp_path / "cache" / "avatars" / "astronaut"
    assert (entry / "avatar.json").is_file() and list(entry.glob("wav2lip-v1-haar.npz"))
    assert not list((tmp_path / "cache").glob("wav2lip-avatar-*.npz"))  # no cache of its own
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio, "audio was not muxed"
        assert container.streams.audio[0].codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == _upstream_frame_count(16000) == 22
    assert frames[0].shape == (512, 512, 3)
    # Frame 0's window [0, 200 ms] is silent, so it keeps the photo's mouth; frame 15 is re-drawn.
    mouth = (slice(140, 165), slice(195, 255))
    assert np.abs(frames[15][mouth].astype(int) - frames[0][mouth]).mean() > 2.0


def test_cli_reports_a_missing_checkpoint(tmp_path: Path) -> None:
    from wav2lip.__main__ import main

    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(8000), 16000, subtype="PCM_16")
    code = main(
        [
            "--checkpoint",
            str(tmp_path / "none.pth"),
            "--face",
            "",
            "--audio",
            str(wav),
            "--outfile",
            str(tmp_path / "o.mp4"),
        ]
    )
    assert code == 1 and not (tmp_path / "o.mp4").exists()


def test_cli_refuses_a_missing_face_file_clearly(tmp_path: Path, capsys) -> None:
    from wav2lip.__main__ import main

    torch.manual_seed(2)
    ckpt = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": Wav2Lip().state_dict()}, ckpt)
    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(8000), 16000, subtype="PCM_16")
    code = main(["--checkpoint", str(ckpt), "--face", str(tmp_path / "nothing.mp4"), "--audio", str(wav),
                 "--outfile", str(tmp_path / "o.mp4"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 1 and "nothing.mp4" in capsys.readouterr().err
