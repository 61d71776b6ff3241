"""MoCE-IR for inference: deterministic routing, batched per-sample expert dispatch.

The forward pass walks :func:`moce.model.plan.build_plan`: dense segments, then for each
adapter only the experts that some sample chose, each once on its sub-batch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moce.errors import InputError
from moce.model.config import MoCEConfig, padding_for
from moce.model.layers import (
    Attention,
    BlockGroup,
    ChannelLayerNorm,
    CrossAttention,
    Downsample,
    EncoderBlock,
    FeedForward,
    FFTAttention,
    FrequencyEmbedding,
    OverlapPatchEmbed,
    Upsample,
)
from moce.model.plan import AdapterStep, build_plan, first_adapter_of_level, walk
from moce.names import FREQ_EMB, IMAGE, RESTORED, AdapterTensors, skip_name
from moce.routing import Routing, RowOps, dispatch, route


class ComplexityExpert(nn.Module):
    """Low-rank expert: project to ``rank`` channels, FFT attention gated by the shared path.

    The original repeats this computation ``depth`` times on the same input, which yields the
    same value; it is computed once here.
    """

    def __init__(self, dim: int, rank: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(
            [
                nn.Conv2d(dim, rank, 1, bias=False),
                nn.Conv2d(dim, rank, 1, bias=False),
                nn.Conv2d(rank, dim, 1, bias=False),
            ]
        )
        self.body = FFTAttention(rank, patch_size)

    def forward(self, x: Tensor, shared: Tensor) -> Tensor:
        y = self.body(self.proj[0](x)) * F.silu(self.proj[1](shared))
        return self.proj[2](y) + x


class Router(nn.Module):
    """Logits from the adapter input's mean colour of features plus the frequency embedding."""

    def __init__(self, dim: int, freq_dim: int, num_experts: int, complexity: Tensor) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(dim, num_experts, bias=False))
        self.freq_gate = nn.Linear(freq_dim, num_experts, bias=False)
        self.register_buffer("complexity", complexity)

    def gate_logits(self, x: Tensor) -> Tensor:
        """Logits from the image-wide mean of ``x`` (tiles override it, see :mod:`moce.model.global_stats`)."""
        return self.gate(x)

    def forward(self, x: Tensor, freq_emb: Tensor) -> Tensor:
        return self.gate_logits(x) + self.freq_gate(freq_emb)


class Adapter(nn.Module):
    """Mixture of complexity experts; ``experts[e][0]`` keeps the original's key layout."""

    def __init__(self, dim: int, ranks: tuple[int, ...], patch_sizes: tuple[int, ...], freq_dim: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList([nn.ModuleList([ComplexityExpert(dim, r, p)]) for r, p in zip(ranks, patch_sizes)])
        self.proj_out = nn.Conv2d(dim, dim, 1, bias=False)
        sizes = torch.tensor([sum(p.numel() for p in e.parameters()) for e in self.experts], dtype=torch.float32)
        self.routing = Router(dim, freq_dim, len(ranks), sizes / sizes.max())

    def expert(self, index: int) -> ComplexityExpert:
        return self.experts[index][0]

    def mix(
        self, x: Tensor, shared: Tensor, groups: Iterable[tuple[int, Tensor, Tensor]], ops: RowOps[Tensor] | None = None
    ) -> Tensor:
        """:func:`moce.routing.dispatch` of ``(expert, rows, gates)`` groups on torch tensors.

        ``ops`` may hand an expert more rows than it was given (training pads them, see
        ``moce.train.objective.PaddedRows``); outputs past the group's rows are dropped.
        """

        def run(expert: int, xs: Tensor, shared_rows: Tensor, gates: Tensor) -> Tensor:
            y = self.expert(expert)(xs, shared_rows)[: gates.numel()]
            return y * gates.to(x.device, x.dtype).view(-1, 1, 1, 1)

        return dispatch(x, shared, groups, x.shape[0], run, ops or TorchRows())


class DecoderBlock(nn.Module):
    """Transformer block whose self-attention branch passes through a routed adapter."""

    def __init__(self, dim: int, heads: int, hidden: int, config: MoCEConfig, ranks: tuple[int, ...]) -> None:
        super().__init__()
        bias, ln_bias = config.decoder_bias, config.layernorm_bias
        self.norms = nn.ModuleList([ChannelLayerNorm(dim, ln_bias), ChannelLayerNorm(dim, ln_bias)])
        self.proj = nn.ModuleList([nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)])
        self.shared = Attention(dim, heads, bias)
        self.mixer = CrossAttention(dim, heads, bias)
        self.ffn = FeedForward(dim, hidden, bias)
        self.adapter = Adapter(dim, ranks, config.patch_sizes, config.freq_dim)

    def pre_route(self, x: Tensor, freq_emb: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Everything up to the router: ``(shortcut, adapter_in, shared, router_logits)``."""
        normed = self.norms[0](x)
        shared = self.shared(self.proj[0](normed))
        adapter_in = self.proj[1](normed)
        return x, adapter_in, shared, self.adapter.routing(adapter_in, freq_emb)

    def post_route(self, shortcut: Tensor, adapter_out: Tensor, shared: Tensor) -> Tensor:
        x = self.mixer(self.adapter.proj_out(adapter_out), shared) + shortcut
        return x + self.ffn(self.norms[1](x))


class DecoderGroup(nn.Module):
    def __init__(self, blocks: list[DecoderBlock]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)


class TorchRows:
    """:class:`moce.routing.RowOps` on torch tensors, out of place (autograd may need the inputs)."""

    def take(self, value: Tensor, rows: Tensor) -> Tensor:
        return value[rows.to(value.device)]

    def zeros_like(self, value: Tensor) -> Tensor:
        return torch.zeros_like(value)

    def add_rows(self, out: Tensor, rows: Tensor, value: Tensor) -> Tensor:
        return out.index_add(0, rows.to(out.device), value)


@torch.compiler.disable
def decide(logits: Tensor, k: int) -> tuple[Routing, list[tuple[int, Tensor, Tensor]]]:
    """The routing of a batch from its router logits, and its groups as tensors on their device.

    A host-side NumPy decision (as every runtime makes it), kept out of ``torch.compile``: dynamo
    would trace NumPy into tensors whose guards fail under inference mode. A compiled model breaks
    its graph here, once per adapter, and compiles the segments and experts between."""
    routing = route(logits.float().cpu().numpy(), k)
    return routing, torch_groups(routing, logits.device)


def torch_groups(routing: Routing, device: torch.device) -> list[tuple[int, Tensor, Tensor]]:
    """:meth:`Routing.gated_groups` as tensors on ``device``, for :meth:`Adapter.mix`."""
    return [
        (expert, torch.as_tensor(rows, device=device), torch.as_tensor(gates, device=device))
        for expert, rows, gates in routing.gated_groups()
    ]


def check_image_tensor(image: Tensor, channels: int) -> None:
    if image.ndim != 4:
        raise InputError(f"expected an image batch [N, C, H, W], got shape {tuple(image.shape)}")
    if image.shape[1] != channels:
        raise InputError(f"expected {channels}-channel images, got {image.shape[1]} channel(s)")


class MoCEIR(nn.Module):
    """The MoCE-IR network; attribute names mirror the original so checkpoints load as is."""

    def __init__(self, config: MoCEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        hidden = [int(c.level_dim(lvl) * c.ffn_hidden_ratio) for lvl in range(c.levels)]
        self.patch_embed = OverlapPatchEmbed(c.in_channels, c.dim)
        self.freq_embed = FrequencyEmbedding(c.freq_dim)
        self.enc = nn.ModuleList(
            [
                nn.ModuleList([self._encoder_group(lvl, c.num_blocks[lvl], hidden[lvl]), Downsample(c.level_dim(lvl))])
                for lvl in range(c.levels - 1)
            ]
        )
        self.latent = self._encoder_group(c.levels - 1, c.num_blocks[-1], hidden[-1])
        self.dec = nn.ModuleList()
        for lvl in reversed(range(c.levels - 1)):  # deepest decoder first, as in the original
            dim = c.level_dim(lvl)
            blocks = [
                DecoderBlock(dim, c.heads[lvl], hidden[lvl], c, c.expert_ranks[lvl])
                for _ in range(c.num_dec_blocks[lvl])
            ]
            self.dec.append(
                nn.ModuleList(
                    [Upsample(2 * dim), nn.Conv2d(2 * dim, dim, 1, bias=c.decoder_bias), DecoderGroup(blocks)]
                )
            )
        self.refinement = self._encoder_group(0, c.num_refinement_blocks, hidden[0])
        self.output = nn.Conv2d(c.dim, c.out_channels, 3, padding=1, bias=c.decoder_bias)
        self.plan = build_plan(c)
        self._first_of_level = {a: lvl for lvl, a in first_adapter_of_level(c).items()}
        self.eval()

    def _encoder_group(self, level: int, count: int, hidden: int) -> BlockGroup:
        c = self.config
        return BlockGroup(
            [EncoderBlock(c.level_dim(level), c.heads[level], hidden, c.layernorm_bias) for _ in range(count)]
        )

    @property
    def blocks(self) -> list[DecoderBlock]:
        """Decoder blocks in execution order; block ``a`` holds adapter ``a``."""
        return [block for _, _, group in self.dec for block in group.layers]

    def adapter(self, index: int) -> Adapter:
        return self.blocks[index].adapter

    def encode(self, image: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """Encoder and latent: ``(latent, skips by level, frequency embedding)``."""
        feats = self.patch_embed(image)
        skips = []
        for group, down in self.enc:
            feats = group(feats)
            skips.append(feats)
            feats = down(feats)
        feats = self.latent(feats)
        return feats, skips, self.freq_embed(feats)

    def run_segment(self, index: int, env: dict[str, Tensor]) -> dict[str, Tensor]:
        """Run trunk segment ``index`` on the named tensors in ``env``; return what it makes."""
        out: dict[str, Tensor] = {}
        if index == 0:
            feats, skips, freq = self.encode(env[IMAGE])
            out.update({skip_name(lvl): t for lvl, t in enumerate(skips)})
            out[FREQ_EMB] = freq
        else:
            prev = AdapterTensors(index - 1)
            feats = self.blocks[index - 1].post_route(env[prev.shortcut], env[prev.adapter_out], env[prev.shared])
        if index == self.config.num_adapters:
            out[RESTORED] = self.output(self.refinement(feats)) + env[IMAGE]
            return out
        known = {**env, **out}
        if index in self._first_of_level:
            level = self._first_of_level[index]
            upsample, fuse, _ = self.dec[self.config.levels - 2 - level]
            feats = fuse(torch.cat([upsample(feats), known[skip_name(level)]], dim=1))
        cur = AdapterTensors(index)
        values = self.blocks[index].pre_route(feats, known[FREQ_EMB])
        out.update(zip((cur.shortcut, cur.adapter_in, cur.shared, cur.logits), values))
        return out

    def run_plan(self, image: Tensor) -> tuple[Tensor, list[Routing]]:
        """Execute the plan on an already padded batch (deterministic top-k routing)."""
        routings: list[Routing] = []

        def adapter(step: AdapterStep, env: dict[str, Tensor]) -> Tensor:
            routing, groups = decide(env[step.logits], self.config.top_k)
            routings.append(routing)
            return self.adapter(step.index).mix(env[step.inputs[0]], env[step.inputs[1]], groups)

        env = walk(self.plan, {IMAGE: image}, lambda step, env: self.run_segment(step.index, env), adapter)
        return env[RESTORED], routings

    @torch.inference_mode()
    def restore(self, image: Tensor) -> tuple[Tensor, list[Routing]]:
        """Restore an [N, C, H, W] batch of any size >= 8x8; returns output and routings."""
        check_image_tensor(image, self.config.in_channels)
        h, w = image.shape[-2:]
        pad_h, pad_w = padding_for(h, w, self.config.size_multiple)
        padded = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else image
        restored, routings = self.run_plan(padded)
        return restored[:, :, :h, :w], routings

    def forward(self, image: Tensor) -> Tensor:
        return self.restore(image)[0]
