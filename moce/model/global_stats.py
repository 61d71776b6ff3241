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

:class:`TileSegments` runs plan segments this way, on a copy of the model whose image-wide
reductions report to one :class:`TileStatistics` (see :mod:`moce.model.rewrite`); the exporter
traces the same object into the ``tile_segment*`` graphs, so every backend does the same arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moce.model.layers import ChannelAttention, FrequencyEmbedding, gram_cosine
from moce.model.network import MoCEIR, Router
from moce.model.rewrite import Rewrite, rewritten
from moce.names import CORE_MASK, IMAGE_STATS, TILE_STATS, USE_IMAGE_STATS


class TileStatistics(nn.Module):
    """One tile's side of every image-wide reduction in a segment, in call order.

    Each reduction computes its local sums over the tile's core (``core_mask``), appends them
    to the tile's report, and returns either those local sums or, when ``use_image_stats`` is
    set, the image's sums from the matching slice of ``image_stats``. Being an ``nn.Module``
    attached under the layers gives its nodes a ``/stats/`` scope in exported graphs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.begin(torch.ones(1, 1, 1, 1))

    def begin(
        self, core_mask: Tensor, use_image_stats: Tensor | None = None, image_stats: Tensor | None = None
    ) -> None:
        """Start a segment run of the tiles whose cores are ``core_mask``."""
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


class TileRewrite(Rewrite):
    """Image-wide reductions through the :class:`TileStatistics` that :class:`TileSegments` attaches."""

    order = 0  # over the export forms of the same methods
    stats: TileStatistics


class TileScores(TileRewrite):
    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        gram, q_sq, k_sq = self.stats.attention(q, k)
        return gram_cosine(gram, q_sq.sqrt(), k_sq.sqrt())


class TileEmbeddingMean(TileRewrite):
    def pool(self, high: Tensor) -> Tensor:
        return self.stats.mean(high)


class TileRouterMean(TileRewrite):
    def gate_logits(self, x: Tensor) -> Tensor:
        return self.gate[2](self.stats.mean(x))


TILE_RULES = {
    ChannelAttention: (TileScores,),
    FrequencyEmbedding: (TileEmbeddingMean,),
    Router: (TileRouterMean,),
}


class TileSegments:
    """Plan segments of tiles: a copy of ``model`` whose image-wide reductions go through one
    :class:`TileStatistics` (``model`` itself is left as it is)."""

    def __init__(self, model: MoCEIR) -> None:
        self.model = rewritten(model, TILE_RULES)
        self.stats = TileStatistics()
        for module in self.model.modules():
            if isinstance(module, TileRewrite):
                module.stats = self.stats

    def run(self, index: int, env: dict[str, Tensor]) -> dict[str, Tensor]:
        """Segment ``index``: ``env`` holds the plan tensors plus :data:`moce.model.plan.TILE_INPUTS`
        (``image_stats`` may be absent: local sums only); the result adds :data:`moce.model.plan.TILE_STATS`."""
        self.stats.begin(env[CORE_MASK], env.get(USE_IMAGE_STATS), env.get(IMAGE_STATS))
        out = self.model.run_segment(index, env)
        out[TILE_STATS] = self.stats.report()
        return out

    def stats_size(self, index: int, env: dict[str, Tensor]) -> int:
        """How many numbers segment ``index`` reports per tile (independent of the tile's size)."""
        plain = {k: v for k, v in env.items() if k not in (USE_IMAGE_STATS, IMAGE_STATS)}
        with torch.no_grad():
            return int(self.run(index, plain)[TILE_STATS].shape[1])
