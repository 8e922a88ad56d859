"""The Wav2Lip generator, written from the published architecture.

Every unit is a convolution followed by BatchNorm and ReLU; the module and attribute names are
chosen so that ``state_dict()`` keys match the authors' checkpoints exactly
(``face_encoder_blocks.1.1.conv_block.0.weight`` ...), which lets ``load_state_dict(strict=True)``
catch any mismatch. For a 96x96 face: 352 state-dict tensors, 36,298,035 parameters.

Inputs are BGR crops scaled to [0, 1]: 6 channels = (lower half zeroed, full reference).
"""

from __future__ import annotations

import torch
from torch import nn


class Conv2d(nn.Module):
    """Conv + BatchNorm + ReLU; with ``residual`` the unit input is added after BN, before ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class Conv2dTranspose(nn.Module):
    """Transposed conv + BatchNorm + ReLU (never residual)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int,
        padding: int,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _face_encoder() -> nn.ModuleList:
    return nn.ModuleList(
        [
            nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96
            nn.Sequential(
                Conv2d(16, 32, 3, 2, 1),  # 48
                Conv2d(32, 32, 3, 1, 1, residual=True),
                Conv2d(32, 32, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2d(32, 64, 3, 2, 1),  # 24
                Conv2d(64, 64, 3, 1, 1, residual=True),
                Conv2d(64, 64, 3, 1, 1, residual=True),
                Conv2d(64, 64, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2d(64, 128, 3, 2, 1),  # 12
                Conv2d(128, 128, 3, 1, 1, residual=True),
                Conv2d(128, 128, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2d(128, 256, 3, 2, 1),  # 6
                Conv2d(256, 256, 3, 1, 1, residual=True),
                Conv2d(256, 256, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2d(256, 512, 3, 2, 1),  # 3
                Conv2d(512, 512, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2d(512, 512, 3, 1, 0),  # 1
                Conv2d(512, 512, 1, 1, 0),
            ),
        ]
    )


def _audio_encoder() -> nn.Sequential:
    # Input (N, 1, 80 mels, 16 frames) -> (N, 512, 1, 1).
    return nn.Sequential(
        Conv2d(1, 32, 3, 1, 1),
        Conv2d(32, 32, 3, 1, 1, residual=True),
        Conv2d(32, 32, 3, 1, 1, residual=True),
        Conv2d(32, 64, 3, (3, 1), 1),  # 27x16
        Conv2d(64, 64, 3, 1, 1, residual=True),
        Conv2d(64, 64, 3, 1, 1, residual=True),
        Conv2d(64, 128, 3, 3, 1),  # 9x6
        Conv2d(128, 128, 3, 1, 1, residual=True),
        Conv2d(128, 128, 3, 1, 1, residual=True),
        Conv2d(128, 256, 3, (3, 2), 1),  # 3x3
        Conv2d(256, 256, 3, 1, 1, residual=True),
        Conv2d(256, 512, 3, 1, 0),  # 1x1
        Conv2d(512, 512, 1, 1, 0),
    )


def _face_decoder() -> nn.ModuleList:
    # Each block's input = previous block output concatenated with the matching encoder skip,
    # hence the odd input widths (512+512, 512+512, 512+256, 384+128, 256+64, 128+32).
    return nn.ModuleList(
        [
            nn.Sequential(Conv2d(512, 512, 1, 1, 0)),  # 1
            nn.Sequential(
                Conv2dTranspose(1024, 512, 3, 1, 0),  # 3
                Conv2d(512, 512, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2dTranspose(1024, 512, 3, 2, 1, output_padding=1),  # 6
                Conv2d(512, 512, 3, 1, 1, residual=True),
                Conv2d(512, 512, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2dTranspose(768, 384, 3, 2, 1, output_padding=1),  # 12
                Conv2d(384, 384, 3, 1, 1, residual=True),
                Conv2d(384, 384, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2dTranspose(512, 256, 3, 2, 1, output_padding=1),  # 24
                Conv2d(256, 256, 3, 1, 1, residual=True),
                Conv2d(256, 256, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2dTranspose(320, 128, 3, 2, 1, output_padding=1),  # 48
                Conv2d(128, 128, 3, 1, 1, residual=True),
                Conv2d(128, 128, 3, 1, 1, residual=True),
            ),
            nn.Sequential(
                Conv2dTranspose(160, 64, 3, 2, 1, output_padding=1),  # 96
                Conv2d(64, 64, 3, 1, 1, residual=True),
                Conv2d(64, 64, 3, 1, 1, residual=True),
            ),
        ]
    )


class Wav2Lip(nn.Module):
    """Generator: (mel windows, masked+reference faces) -> lower-face BGR images in (0, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = _face_encoder()
        self.audio_encoder = _audio_encoder()
        self.face_decoder_blocks = _face_decoder()
        self.output_block = nn.Sequential(
            Conv2d(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """4-D inputs ``(N,1,80,16)`` / ``(N,6,96,96)`` give ``(N,3,96,96)``.

        5-D inputs (the training layout ``(B,T,1,80,16)`` / ``(B,6,T,96,96)``) are folded into
        the batch time step by time step and the output is unfolded to ``(B,3,T,96,96)``.
        """
        batch = audio_sequences.size(0)
        sequenced = face_sequences.dim() > 4
        if sequenced:
            steps = audio_sequences.size(1)
            audio_sequences = torch.cat([audio_sequences[:, t] for t in range(steps)], dim=0)
            face_sequences = torch.cat([face_sequences[:, :, t] for t in range(steps)], dim=0)

        x = self.audio_encoder(audio_sequences)  # (N, 512, 1, 1)

        skips: list[torch.Tensor] = []
        feat = face_sequences
        for block in self.face_encoder_blocks:
            feat = block(feat)
            skips.append(feat)

        # Decoder output first, skip second: the channel order the released weights expect.
        for i, block in enumerate(self.face_decoder_blocks):
            x = block(x)
            x = torch.cat((x, skips[len(skips) - 1 - i]), dim=1)

        out = self.output_block(x)
        if sequenced:
            out = torch.stack(torch.split(out, batch, dim=0), dim=2)  # (B, 3, T, H, W)
        return out
