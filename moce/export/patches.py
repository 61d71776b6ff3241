"""Export-time rewrites of the model (in the spirit of optimum's ``ModelPatcher``).

The experts mix queries and keys by ``irfft2(rfft2(q) * rfft2(k))`` over p x p patches. ONNX
``DFT`` is missing from TensorRT before 11.2, fragile in FP16, and torch's ``irfft2`` export is
rejected by ONNX Runtime. The same circular convolution is written here as real matrix products
with fixed DFT matrices: exact in exact arithmetic, float32 error ~1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from moce.model.layers import FFTAttention, fft_patch_product


@lru_cache(maxsize=None)
def _dft_matrices(p: int) -> tuple[Tensor, ...]:
    """Real DFT factors for side ``p`` (built in float64 NumPy, returned as float32 tensors).

    Forward: rows by the real FFT (``p -> m = p//2 + 1`` bins), columns by the full complex
    FFT. Inverse: complex inverse on columns, then the Hermitian C2R sum on rows, whose
    weights (1 for DC and Nyquist, 2 otherwise) and 1/p^2 scale are folded in. NumPy keeps
    their construction out of traced graphs: they export as plain constants.
    """
    m = p // 2 + 1
    n = np.arange(p, dtype=np.float64)
    angle_r = 2 * math.pi * np.outer(n, np.arange(m)) / p  # [p, m]
    angle_c = 2 * math.pi * np.outer(n, n) / p  # [p, p]
    weight = np.full(m, 2.0)
    weight[0] = 1.0
    if p % 2 == 0:
        weight[-1] = 1.0
    mats = (
        np.cos(angle_r),  # x -> Re(rfft) along rows
        -np.sin(angle_r),  # x -> Im(rfft) along rows
        np.cos(angle_c),  # complex DFT along columns, real part
        np.sin(angle_c),  # ... imaginary part
        weight[:, None] * np.cos(angle_r.T) / (p * p),  # C2R along rows, real input
        -weight[:, None] * np.sin(angle_r.T) / (p * p),  # ... imaginary input
    )
    return tuple(torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32)) for t in mats)


def _forward_dft(x: Tensor, cr: Tensor, sr: Tensor, cc: Tensor, sc: Tensor) -> tuple[Tensor, Tensor]:
    xr, xi = x @ cr, x @ sr
    return cc @ xr + sc @ xi, cc @ xi - sc @ xr


def dft_patch_product(q: Tensor, k: Tensor) -> Tensor:
    """``irfft2(rfft2(q) * rfft2(k), s=(p, p))`` as real matrix products (no DFT op)."""
    p = q.shape[-1]
    cr, sr, cc, sc, ir, ii = (m.to(q.device) for m in _dft_matrices(int(p)))
    qr, qi = _forward_dft(q.float(), cr, sr, cc, sc)
    kr, ki = _forward_dft(k.float(), cr, sr, cc, sc)
    pr, pi = qr * kr - qi * ki, qr * ki + qi * kr
    zr, zi = cc @ pr - sc @ pi, cc @ pi + sc @ pr  # inverse complex DFT on columns (scale folded)
    return zr @ ir + zi @ ii


@contextmanager
def export_patches(module: nn.Module | None) -> Iterator[None]:
    """Within the block, every expert in ``module`` uses :func:`dft_patch_product`."""
    targets = [m for m in module.modules() if isinstance(m, FFTAttention)] if module is not None else []
    try:
        for m in targets:
            m.patch_product = dft_patch_product
        yield
    finally:
        for m in targets:
            m.patch_product = fft_patch_product
