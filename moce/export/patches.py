"""Export-time rewrites of the model (in the spirit of optimum's ``ModelPatcher``).

Each computes what the model computes, in a form that exports or runs better; float32 error ~1e-6.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moce.model.layers import (Attention, CrossAttention, FeedForward, FFTAttention, cosine_scores, fft_patch_mix,
                               fused_projection, gram_cosine, pad_to_patches)


@cache
def dft_factors(p: int) -> tuple[Tensor, Tensor, Tensor]:
    """Three real matrices that carry the whole 2-D real DFT round trip for side ``p``.

    With ``m = p // 2 + 1`` bins of the real FFT along rows:

    * ``w_rows`` [p, 2m] = [cos | -sin]: a row's real FFT, real and imaginary parts side by side;
    * ``w_cols`` [p, 2p] = [cos | sin]: applied to transposed (column-major) spectra, it gives
      the products needed for the complex DFT along columns and for its inverse;
    * ``w_back`` [2m, p]: the Hermitian C2R sum along rows (weights 1 for DC and Nyquist, 2
      otherwise) with the 1/p^2 normalisation folded in.

    Built in float64 NumPy, so they enter traced graphs as plain constants.
    """
    m = p // 2 + 1
    n = np.arange(p, dtype=np.float64)
    rows = 2 * math.pi * np.outer(n, np.arange(m)) / p  # [p, m]
    cols = 2 * math.pi * np.outer(n, n) / p  # [p, p]
    weight = np.full(m, 2.0)
    weight[0] = 1.0
    if p % 2 == 0:
        weight[-1] = 1.0
    w_rows = np.concatenate([np.cos(rows), -np.sin(rows)], axis=1)
    w_cols = np.concatenate([np.cos(cols), np.sin(cols)], axis=1)
    w_back = np.concatenate([weight[:, None] * np.cos(rows.T), -weight[:, None] * np.sin(rows.T)], axis=0) / (p * p)
    return tuple(torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32)) for t in (w_rows, w_cols, w_back))


def _column_dft(spectrum_t: Tensor, w_cols: Tensor, m: int, p: int, inverse: bool) -> tuple[Tensor, Tensor]:
    """Complex DFT (or inverse, unscaled) along columns of a transposed spectrum [..., 2m, p].

    One matrix product gives [[Re.cos, Re.sin], [Im.cos, Im.sin]]; the complex result is
    their sum/difference: forward ``(Re.cos + Im.sin, Im.cos - Re.sin)``, inverse
    ``(Re.cos - Im.sin, Im.cos + Re.sin)``.
    """
    blocks = spectrum_t @ w_cols  # [..., 2m, 2p]
    re_cos, re_sin = blocks[..., :m, :p], blocks[..., :m, p:]
    im_cos, im_sin = blocks[..., m:, :p], blocks[..., m:, p:]
    if inverse:
        return re_cos - im_sin, im_cos + re_sin
    return re_cos + im_sin, im_cos - re_sin


def dft_patch_mix(q: Tensor, k: Tensor, p: int) -> Tensor:
    """:func:`~moce.model.layers.fft_patch_mix` as six large matrix products (no DFT op).

    Rows are transformed in place on the image layout ([b, c, H, W/p, p] @ [p, 2m]), so the only
    data movement is one transpose per tensor to bring columns last; every product is a single
    large GEMM with a constant right operand, which CPU and GPU runtimes execute well.
    """
    b, c, h, w = q.shape
    m = p // 2 + 1
    w_rows, w_cols, w_back = (t.to(q.device) for t in dft_factors(int(p)))
    qp, kp = pad_to_patches(q.float(), p), pad_to_patches(k.float(), p)
    nh, nw = qp.shape[2] // p, qp.shape[3] // p

    def spectrum_t(x: Tensor) -> Tensor:  # [b, c, nh, nw, 2m, p]: row FFT, then columns last
        rows = x.reshape(b, c, nh, p, nw, p) @ w_rows  # [b, c, nh, p(h), nw, 2m]
        return rows.permute(0, 1, 2, 4, 5, 3)

    qr, qi = _column_dft(spectrum_t(qp), w_cols, m, p, inverse=False)
    kr, ki = _column_dft(spectrum_t(kp), w_cols, m, p, inverse=False)
    product = torch.cat([qr * kr - qi * ki, qr * ki + qi * kr], dim=-2)  # [b, c, nh, nw, 2m, p]
    zr, zi = _column_dft(product, w_cols, m, p, inverse=True)
    z = torch.cat([zr, zi], dim=-2).permute(0, 1, 2, 5, 3, 4)  # [b, c, nh, p(h), nw, 2m]
    out = (z @ w_back).reshape(b, c, nh * p, nw * p)
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
    """:func:`~moce.model.layers.cosine_scores` as the Gram matrix over the outer product of norms."""

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return gram_cosine(q @ k.transpose(-2, -1), q.norm(dim=-1), k.norm(dim=-1))


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
        out.append(F.conv2d(y, depthwise.weight[rows], None if depthwise.bias is None else depthwise.bias[rows],
                            depthwise.stride, depthwise.padding, depthwise.dilation, size))
    return tuple(out)


_REWRITES: tuple[tuple[tuple[type[nn.Module], ...], str, Callable[..., Any], Callable[[], Any]], ...] = (
    ((FFTAttention,), SPECTRAL_SCOPE, fft_patch_mix, DftPatchMix),
    ((Attention, CrossAttention), SIMILARITY_SCOPE, cosine_scores, GramScores),
    ((FeedForward, Attention, CrossAttention, FFTAttention), "project", fused_projection, lambda: split_projection),
)
"""(module types, attribute, the model's own function, factory of the export form)."""


@contextmanager
def export_patches(module: nn.Module | None) -> Iterator[None]:
    """Within the block, every module in ``module`` uses the export forms above."""
    patched: list[tuple[nn.Module, str, Callable[..., Any]]] = []
    try:
        for m in module.modules() if module is not None else []:
            for kinds, attribute, original, export_form in _REWRITES:
                if isinstance(m, kinds):
                    setattr(m, attribute, export_form())
                    patched.append((m, attribute, original))
        yield
    finally:
        for m, attribute, original in patched:
            if attribute in m._modules:
                delattr(m, attribute)
            setattr(m, attribute, original)
