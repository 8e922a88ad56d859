"""S3FD (Zhang et al. 2017, "Single Shot Scale-invariant Face Detector"), our own PyTorch build.

The layer names and shapes are those of face_alignment's published ``s3fd-619a316812.pth`` so
that file loads with ``strict=True``: a VGG16 trunk (``conv1_1`` .. ``conv5_3``), ``fc6``/``fc7``
as convolutions, two extra stages (``conv6_*``, ``conv7_*``), L2Norm on the three shallow taps
(``conv3_3_norm`` .. ``conv5_3_norm``, initial scales 10/8/5) and one confidence and one
box-offset head per tap (``<tap>_mbox_conf`` / ``<tap>_mbox_loc``).

Two quirks of the released weights are kept on purpose, because the weights were trained with
them (sfzhang15/SFD issues #36 and #9: the released model used ``fc6`` with padding 3, no
dilation, even though the paper implies otherwise):

* ``fc6`` is a 3x3 convolution with padding 3, so the fc7/conv6_2/conv7_2 maps are 4 cells
  larger than input/stride would suggest; anchors are still laid out from the top-left corner.
* the stride-4 head (conv3_3) predicts 3 background logits and 1 face logit; the background
  score is their maximum ("max-out background label", the paper's fix for the many tiny anchors).

The network expects BGR pixels minus ``BGR_MEAN`` (Caffe convention of the original model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BGR_MEAN = (104.0, 117.0, 123.0)

# (name, in_channels, out_channels, kernel, stride, padding); "pool" = 2x2 max-pool, stride 2.
_TRUNK: tuple[tuple[str, int, int, int, int, int] | str, ...] = (
    ("conv1_1", 3, 64, 3, 1, 1), ("conv1_2", 64, 64, 3, 1, 1), "pool",
    ("conv2_1", 64, 128, 3, 1, 1), ("conv2_2", 128, 128, 3, 1, 1), "pool",
    ("conv3_1", 128, 256, 3, 1, 1), ("conv3_2", 256, 256, 3, 1, 1),
    ("conv3_3", 256, 256, 3, 1, 1), "pool",
    ("conv4_1", 256, 512, 3, 1, 1), ("conv4_2", 512, 512, 3, 1, 1),
    ("conv4_3", 512, 512, 3, 1, 1), "pool",
    ("conv5_1", 512, 512, 3, 1, 1), ("conv5_2", 512, 512, 3, 1, 1),
    ("conv5_3", 512, 512, 3, 1, 1), "pool",
    ("fc6", 512, 1024, 3, 1, 3), ("fc7", 1024, 1024, 1, 1, 0),
    ("conv6_1", 1024, 256, 1, 1, 0), ("conv6_2", 256, 512, 3, 2, 1),
    ("conv7_1", 512, 128, 1, 1, 0), ("conv7_2", 128, 256, 3, 2, 1),
)

# Detection sources, shallow to deep: (trunk layer, channels, L2Norm initial scale or None).
# Source i has stride 4 * 2**i (4 .. 128) and square anchors of 4 strides (16 .. 512 px).
SOURCES: tuple[tuple[str, int, float | None], ...] = (
    ("conv3_3", 256, 10.0),
    ("conv4_3", 512, 8.0),
    ("conv5_3", 512, 5.0),
    ("fc7", 1024, None),
    ("conv6_2", 512, None),
    ("conv7_2", 256, None),
)
# Background logits of the stride-4 head (max-out); every other head has one.
MAXOUT_BACKGROUND = 3


def source_stride(index: int) -> int:
    return 4 * 2**index


class L2Norm(nn.Module):
    """Per-position L2 normalisation over channels, times a learnt per-channel scale.

    The shallow VGG features are much larger in magnitude than the deep ones; without this the
    heads on conv3_3..conv5_3 would dominate (ParseNet's fix, used by SSD and S3FD).
    """

    def __init__(self, channels: int, scale: float, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def _head_prefix(tap: str, scale: float | None) -> str:
    return f"{tap}_norm" if scale is not None else tap


class S3FD(nn.Module):
    """``forward(bgr_minus_mean)`` -> per source ``(conf_logits (N,2,H,W), loc (N,4,H,W))``.

    ``conf_logits[:, 1]`` is the face logit (softmax over the two channels gives the face
    probability); ``loc`` holds SSD-style offsets against the source's anchors (see
    ``services.face.boxes.decode``).
    """

    def __init__(self) -> None:
        super().__init__()
        for spec in _TRUNK:
            if spec != "pool":
                name, cin, cout, k, s, p = spec
                self.add_module(name, nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p))
        for i, (tap, channels, scale) in enumerate(SOURCES):
            if scale is not None:
                self.add_module(f"{tap}_norm", L2Norm(channels, scale))
            conf_channels = MAXOUT_BACKGROUND + 1 if i == 0 else 2
            prefix = _head_prefix(tap, scale)
            self.add_module(f"{prefix}_mbox_conf", nn.Conv2d(channels, conf_channels, 3, 1, 1))
            self.add_module(f"{prefix}_mbox_loc", nn.Conv2d(channels, 4, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        taps: dict[str, torch.Tensor] = {}
        wanted = {tap for tap, _, _ in SOURCES}
        for spec in _TRUNK:
            if spec == "pool":
                x = F.max_pool2d(x, 2, 2)
                continue
            name = spec[0]
            x = F.relu(self.get_submodule(name)(x))
            if name in wanted:
                taps[name] = x
        outputs = []
        for i, (tap, _, scale) in enumerate(SOURCES):
            feature = taps[tap]
            if scale is not None:
                feature = self.get_submodule(f"{tap}_norm")(feature)
            prefix = _head_prefix(tap, scale)
            conf = self.get_submodule(f"{prefix}_mbox_conf")(feature)
            loc = self.get_submodule(f"{prefix}_mbox_loc")(feature)
            if i == 0:
                background = conf[:, :MAXOUT_BACKGROUND].amax(dim=1, keepdim=True)
                conf = torch.cat([background, conf[:, MAXOUT_BACKGROUND:]], dim=1)
            outputs.append((conf, loc))
        return outputs
