"""Export MoCE-IR-S split plans whose channel layer norms take other forms, to time what the
layer norms cost ONNX Runtime (docs/performance.md, session 8).

    python scripts/layernorm_variants.py build/moceir_S_random.safetensors build/S_ln
    python scripts/ort_session_configs.py build/S.moce 256 build/S_ln_conv.moce build/S_ln_free.moce

* ``free``: every layer norm is the identity. Its outputs are wrong; it only bounds from above
  what any rewrite of the layer norms could gain.
* ``conv``: the layer norm in ops that ONNX Runtime keeps in its blocked NCHWc layout: centring
  as a 1x1 convolution with ``I - 1/C``, the variance as a 1x1 convolution to one channel, the
  scale broadcast back by a 1 -> C convolution, the bias as a depth-wise 1x1 convolution.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from moce.export.exporter import ExportOptions, export_package
from moce.export.patches import traced_constant
from moce.model.layers import ChannelLayerNorm


def blocked_layer_norm(norm: ChannelLayerNorm, x: Tensor) -> Tensor:
    """The with-bias channel layer norm (eps 1e-5) as convolutions and products."""
    weight, bias = norm.body.weight, norm.body.bias
    if bias is None:
        raise ValueError("the bias-free layer norm does not centre; this form covers the with-bias one only")
    channels = int(weight.detach().numpy().shape[0])  # a plain int: under tracing, .shape gives tensors
    centred = F.conv2d(x, traced_constant(np.eye(channels) - 1.0 / channels)[:, :, None, None])
    mean_weight = traced_constant(np.full((1, channels, 1, 1), 1.0 / channels))
    variance = F.conv2d(centred * centred, mean_weight, traced_constant([1e-5]))
    scaled = centred * F.conv2d(torch.rsqrt(variance), weight[:, None, None, None])
    return F.conv2d(scaled, traced_constant(np.ones((channels, 1, 1, 1))), bias, groups=channels)


VARIANTS = {"free": lambda norm, x: x, "conv": blocked_layer_norm}


def main(checkpoint: str, prefix: str) -> None:
    original = ChannelLayerNorm.forward
    options = ExportOptions(conditional=False, dense=False, validate=False, tiles=False, overwrite=True)
    try:
        for name, form in VARIANTS.items():
            ChannelLayerNorm.forward = form
            export_package(checkpoint, Path(f"{prefix}_{name}.moce"), options)
    finally:
        ChannelLayerNorm.forward = original


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
