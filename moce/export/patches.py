"""Export forms of the model: :func:`export_form` returns a copy whose layers compute what the
model computes, in a form that exports or runs better (float32 error ~1e-6); see
:mod:`moce.model.rewrite` for how the copy's layers take them.

* Spectral mixing: the experts mix queries and keys by ``irfft2(rfft2(q) * rfft2(k))`` over
  p x p patches. ONNX ``DFT`` is missing from TensorRT before 11.2, fragile in FP16, and torch's
  ``irfft2`` export is rejected by ONNX Runtime. The same circular convolution is written here
  as real matrix products with fixed DFT matrices.
* Attention scores: ``normalize(q) @ normalize(k).T`` exports as ``Expand`` + ``Div`` over every
  pixel of q and k; the Gram matrix divided by the outer product of the norms touches only
  [channels x channels] values after the one product (segment 0 of MoCE-IR-S, 256 px, ONNX
  Runtime: ~4% faster).
* Projections: a 1x1 + depth-wise convolution followed by ``chunk`` becomes one convolution pair
  per chunk (weight slices). ONNX Runtime's CPU kernels keep convolution outputs in a blocked
  layout (NCHWc) that ``Split`` cannot read, so the fused form pays a reorder plus a split over
  the whole tensor (with the scores rewrite, segment 0: ~13% faster).
* Down-sampling: a 3x3 convolution and a pixel-unshuffle become one strided convolution, whose
  output is already in that blocked layout (segment 0: ~2% faster).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moce.model.layers import ChannelAttention, Downsample, FFTAttention, Projecting, gram_cosine, pad_to_patches
from moce.model.rewrite import Rewrite, rewritten

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclass(frozen=True)
class DftFactors:
    """Real matrices that carry the whole 2-D real DFT round trip for side ``p``.

    With ``m = p // 2 + 1`` bins of the real FFT along rows, real and imaginary parts are kept
    as separate tensors all the way (no slicing of stacked spectra: ONNX Runtime ran the stacked
    form's twelve ``Slice`` copies per expert slower than the extra products, see
    docs/performance.md):

    * ``rows_re`` / ``rows_im`` [p, m]: a row's real FFT (cos, -sin);
    * ``cols_cos`` / ``cols_sin`` [p, p] (symmetric): the complex DFT along columns, and its inverse;
    * ``back_re`` / ``back_im`` [m, p]: the Hermitian C2R sum along rows (weights 1 for DC and
      Nyquist, 2 otherwise) with the 1/p^2 normalisation folded in.
    """

    rows_re: Tensor
    rows_im: Tensor
    cols_cos: Tensor
    cols_sin: Tensor
    back_re: Tensor
    back_im: Tensor

    def to(self, device: torch.device) -> DftFactors:
        return DftFactors(*(getattr(self, f.name).to(device) for f in fields(self)))


def traced_constant(array: npt.ArrayLike) -> Tensor:
    """A float32 tensor built from NumPy, so tracing records it as a constant (not as ops on weights)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@cache
def dft_factors(p: int) -> DftFactors:
    """:class:`DftFactors` for side ``p``, built in float64 NumPy so they enter traced graphs as
    plain float32 constants."""
    m = p // 2 + 1
    n = np.arange(p, dtype=np.float64)
    rows = 2 * math.pi * np.outer(n, np.arange(m)) / p  # [p, m]
    cols = 2 * math.pi * np.outer(n, n) / p  # [p, p]
    weight = np.full(m, 2.0)
    weight[0] = 1.0
    if p % 2 == 0:
        weight[-1] = 1.0
    back = weight[:, None] / (p * p)
    matrices = (np.cos(rows), -np.sin(rows), np.cos(cols), np.sin(cols), back * np.cos(rows.T), -back * np.sin(rows.T))
    return DftFactors(*(traced_constant(t) for t in matrices))


def _column_dft(re: Tensor, im: Tensor, f: DftFactors, inverse: bool) -> tuple[Tensor, Tensor]:
    """Complex DFT (or inverse, unscaled) along the second-last axis of spectra [..., p, n].

    Multiplied from the left by the (symmetric) cos and sin matrices, so the spectra never
    leave the image layout.
    """
    if inverse:
        return f.cols_cos @ re - f.cols_sin @ im, f.cols_cos @ im + f.cols_sin @ re
    return f.cols_cos @ re + f.cols_sin @ im, f.cols_cos @ im - f.cols_sin @ re


def dft_patch_mix(q: Tensor, k: Tensor, p: int) -> Tensor:
    """:func:`~moce.model.layers.fft_patch_mix` as matrix products with constant operands (no DFT op).

    Every step works on the image layout viewed as [b, c, H/p, p, W/p * m]: rows are
    transformed from the right ([..., W/p, p] @ [p, m]), columns from the left ([p, p] @
    [..., p, W/p * m]), so there is no transpose at all (ONNX Runtime, MoCE-IR-S experts at
    256 px: 15-30% faster than with the columns brought last; docs/performance.md).
    """
    b, c, h, w = q.shape
    f = dft_factors(int(p)).to(q.device)
    m = p // 2 + 1
    qp, kp = pad_to_patches(q.float(), p), pad_to_patches(k.float(), p)
    nh, nw = qp.shape[2] // p, qp.shape[3] // p

    def spectrum(x: Tensor) -> tuple[Tensor, Tensor]:  # [b, c, nh, p(h), nw * m]
        rows = x.reshape(b, c, nh, p, nw, p)
        re, im = ((rows @ t).reshape(b, c, nh, p, nw * m) for t in (f.rows_re, f.rows_im))
        return _column_dft(re, im, f, inverse=False)

    (qr, qi), (kr, ki) = spectrum(qp), spectrum(kp)
    zr, zi = _column_dft(qr * kr - qi * ki, qr * ki + qi * kr, f, inverse=True)
    zr, zi = (t.reshape(b, c, nh, p, nw, m) for t in (zr, zi))
    out = (zr @ f.back_re + zi @ f.back_im).reshape(b, c, nh * p, nw * p)
    return out[:, :, :h, :w]


SPECTRAL_SCOPE = "patch_mix"
"""Exported nodes of the spectral mixing carry ``/patch_mix/`` in their names (module scope), so
precision passes can find them: its values grow with p^2 and overflow float16."""


class DftPatchMix(nn.Module):
    """:func:`dft_patch_mix` as a parameter-free module, so its nodes get their own scope."""

    def forward(self, q: Tensor, k: Tensor, p: int) -> Tensor:
        return dft_patch_mix(q, k, p)


SIMILARITY_SCOPE = "similarity"
"""Exported nodes of :class:`GramScores` carry ``/similarity/``: the Gram matrix and the norms are
sums over every pixel, far beyond float16's range, so precision passes keep them in float32."""


class GramScores(nn.Module):
    """:func:`~moce.model.layers.cosine_scores` as the Gram matrix over the outer product of norms.

    The norms are written as the square root of a sum of squares: ``norm`` exports as
    ``ReduceL2``, which ONNX Runtime runs 1.5-10x slower than ``Mul`` + ``ReduceSum`` + ``Sqrt``
    on these shapes (one row of 16k-65k pixels per channel).
    """

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return gram_cosine(q @ k.transpose(-2, -1), (q * q).sum(-1).sqrt(), (k * k).sum(-1).sqrt())


def split_projection(pointwise: nn.Conv2d, depthwise: nn.Conv2d, x: Tensor, parts: int) -> tuple[Tensor, ...]:
    """:func:`~moce.model.layers.fused_projection` as one 1x1 + depth-wise pair per part.

    Exact: a depth-wise channel depends only on the same channel of the 1x1 output, so slicing
    both weights by output channel gives each part on its own.
    """
    size = pointwise.out_channels // parts
    out = []
    for part in range(parts):
        rows = slice(part * size, (part + 1) * size)
        y = F.conv2d(x, pointwise.weight[rows], None if pointwise.bias is None else pointwise.bias[rows])
        out.append(
            F.conv2d(
                y,
                depthwise.weight[rows],
                None if depthwise.bias is None else depthwise.bias[rows],
                depthwise.stride,
                depthwise.padding,
                depthwise.dilation,
                size,
            )
        )
    return tuple(out)


def strided_unshuffle(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """:func:`~moce.model.layers.conv_unshuffle` as one 4x4 convolution of stride 2.

    Exact: output channel ``4c + 2i + j`` of the unshuffle is the 3x3 convolution's channel c at
    pixel offset (i, j) of each 2x2 cell, which is a 4x4 window at stride 2 holding the 3x3
    kernel shifted by (i, j) and zeros elsewhere. ONNX Runtime then writes the down-sampled
    stream straight into its blocked layout, so every encoder level's residual sums stay in it
    (segment 0 of MoCE-IR-S: Transpose 92 -> 49, 20 sums folded into convolutions, ~2% faster)
    instead of starting in NCHW after the unshuffle's reshapes. It costs 78% more FLOPs in the
    three down-sampling convolutions (+1.4 GFLOP at 256 px). The kernel is built in NumPy, so
    it enters traced graphs as a constant.
    """
    weight = conv.weight.detach().cpu().numpy()
    out, channels = weight.shape[:2]
    strided = np.zeros((out * 4, channels, 4, 4), dtype=np.float32)
    for i in range(2):
        for j in range(2):
            strided[2 * i + j :: 4, :, i : i + 3, j : j + 3] = weight
    return F.conv2d(x, traced_constant(strided).to(x.device, x.dtype), stride=2, padding=1)


class SplitProjection(Rewrite):
    """Projections as one 1x1 + depth-wise convolution pair per part (:func:`split_projection`)."""

    def project(self, pointwise: nn.Conv2d, depthwise: nn.Conv2d, x: Tensor, parts: int) -> tuple[Tensor, ...]:
        return split_projection(pointwise, depthwise, x, parts)


class GramSimilarity(Rewrite):
    """Attention scores by :class:`GramScores`, under the ``similarity`` scope."""

    similarity: GramScores

    @classmethod
    def attach(cls, module: nn.Module) -> None:
        module.similarity = GramScores()

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return self.similarity(q, k)


class DftSpectralMix(Rewrite):
    """Spectral mixing by :class:`DftPatchMix`, under the ``patch_mix`` scope."""

    patch_mix: DftPatchMix
    patch_size: int

    @classmethod
    def attach(cls, module: nn.Module) -> None:
        module.patch_mix = DftPatchMix()

    def mix_patches(self, q: Tensor, k: Tensor) -> Tensor:
        return self.patch_mix(q, k, self.patch_size)


class StridedDownsample(Rewrite):
    """Down-sampling as one strided convolution (:func:`strided_unshuffle`)."""

    def down(self, conv: nn.Conv2d, x: Tensor) -> Tensor:
        return strided_unshuffle(conv, x)


EXPORT_RULES = {
    Projecting: (SplitProjection,),
    ChannelAttention: (GramSimilarity,),
    FFTAttention: (DftSpectralMix,),
    Downsample: (StridedDownsample,),
}


def export_form(module: ModuleT) -> ModuleT:
    """A copy of ``module`` (a model, an expert, any part) in the forms the exported graphs run;
    ``module`` itself is left as it is. Applying it again changes nothing more."""
    return rewritten(module, EXPORT_RULES)
