"""Image-wide statistics for tiled restoration.

MoCE-IR is not local: every transposed attention normalises queries and keys over all pixels
and mixes channels with their Gram matrix, and the routers and the frequency embedding pool
over the whole image. A tile run alone therefore sees other numbers than the whole image
(measured on the demo model, 1024 px in 256 px tiles: 39 dB apart, seams or not).

All of these reductions are *sums over pixels*. So a tile can report its share of each sum
(over its core, the part no other tile owns) and the tiles' shares add up to the image's
sums exactly. Run again with those image sums imposed, every tile computes what the whole
image would, up to what those sums depended on in the previous pass: a fixed-point
iteration that converges in a few passes (66 dB with the exact sums imposed).

:func:`run_tile_segment` runs one plan segment this way; the exporter traces the same function
into the ``tile_segment*`` graphs, so every backend does the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moce.model.layers import Attention, CrossAttention, FrequencyEmbedding
from moce.model.network import Router
from moce.model.plan import CORE_MASK, IMAGE_STATS, TILE_STATS, USE_IMAGE_STATS


class TileStatistics(nn.Module):
    """One tile's side of every image-wide reduction in a segment, in call order.

    Each reduction computes its local sums over the tile's core (``core_mask``), appends them
    to the tile's report, and returns either those local sums or, when ``use_image_stats`` is
    set, the image's sums from the matching slice of ``image_stats``. Being an ``nn.Module``
    attached under the layers gives its nodes a ``/stats/`` scope in exported graphs.
    """

    def __init__(
        self, core_mask: Tensor, use_image_stats: Tensor | None = None, image_stats: Tensor | None = None
    ) -> None:
        super().__init__()
        self.core_mask = core_mask
        self.use_image_stats = use_image_stats
        self.image_stats = image_stats
        self.parts: list[Tensor] = []
        self.offset = 0

    def _mask(self, pixels: int) -> Tensor:
        """``[N, 1, h, w]`` core mask at the level with ``pixels`` pixels; exact 0/1 because
        cores lie on the package's size multiple."""
        mask = self.core_mask
        while mask.shape[-1] * mask.shape[-2] > pixels:
            mask = F.avg_pool2d(mask, 2)
        return mask

    def _exchange(self, *local: Tensor) -> tuple[Tensor, ...]:
        """Report ``local`` sums; return them, or the image's sums when those are imposed."""
        flat = [t.reshape(t.shape[0], -1) for t in local]
        self.parts.extend(flat)
        if self.image_stats is None:
            return local
        out = []
        for t, f in zip(local, flat):
            size = f.shape[1]
            imposed = self.image_stats[:, self.offset : self.offset + size].reshape(t.shape)
            self.offset += size
            out.append(torch.where(self.use_image_stats > 0.5, imposed, t))
        return tuple(out)

    def attention(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gram matrix and squared norms of ``[N, heads, c, pixels]`` queries and keys."""
        n, _, _, pixels = q.shape
        mask = self._mask(pixels).reshape(n, 1, 1, pixels)
        qm = q * mask
        return self._exchange(qm @ k.transpose(-2, -1), (qm * q).sum(-1), (k * k * mask).sum(-1))

    def mean(self, x: Tensor) -> Tensor:
        """Per-channel mean of ``[N, C, H, W]`` over the core, or over the image when imposed."""
        mask = self._mask(x.shape[-2] * x.shape[-1])
        total, count = self._exchange((x * mask).sum((2, 3)), mask.sum((2, 3)))
        return total / count

    def report(self) -> Tensor:
        """``[N, K]``: every local sum of the segment, flattened in call order."""
        return torch.cat(self.parts, dim=1)


def _holders(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, Attention | CrossAttention | FrequencyEmbedding | Router)]


@contextmanager
def tile_statistics(model: nn.Module, stats: TileStatistics) -> Iterator[TileStatistics]:
    """Route every image-wide reduction of ``model`` through ``stats`` for the duration."""
    holders = _holders(model)
    for m in holders:
        m.stats = stats
    try:
        yield stats
    finally:
        for m in holders:
            m.stats = None


def run_tile_segment(model: nn.Module, index: int, env: dict[str, Tensor]) -> dict[str, Tensor]:
    """Segment ``index`` of a tile: ``env`` holds the plan tensors plus :data:`moce.model.plan.TILE_INPUTS`
    (``image_stats`` may be absent: local sums only); the result adds :data:`moce.model.plan.TILE_STATS`."""
    stats = TileStatistics(env[CORE_MASK], env.get(USE_IMAGE_STATS), env.get(IMAGE_STATS))
    with tile_statistics(model, stats):
        out = model.run_segment(index, env)
    out[TILE_STATS] = stats.report()
    return out


def stats_size(model: nn.Module, index: int, env: dict[str, Tensor]) -> int:
    """How many numbers segment ``index`` reports per tile (independent of the tile's size)."""
    plain = {k: v for k, v in env.items() if k not in (USE_IMAGE_STATS, IMAGE_STATS)}
    with torch.no_grad():
        return int(run_tile_segment(model, index, plain)[TILE_STATS].shape[1])
