"""MoCE-IR hyper-parameters, derived from a checkpoint's own tensors.

Like spandrel, we never trust a side channel for the architecture: every field that shapes a
tensor is read off state-dict shapes and key counts. The Lightning ``hyper_parameters`` are only
cross-checked, and supply what no tensor records (``top_k``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from moce.errors import ConfigError
from moce.imageio import check_min_side


def padding_for(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Bottom/right reflect padding that makes both sides multiples of ``multiple``."""
    check_min_side("image", width, height)
    return (-height) % multiple, (-width) % multiple


@dataclass(frozen=True)
class MoCEConfig:
    """Architecture of one MoCE-IR network. Level 0 is full resolution, the last is the latent.

    ``expert_ranks[l]`` lists the ranks of the experts in the adapters of decoder level ``l``;
    ``num_dec_blocks`` keeps the original's order (index = level, shallow first).
    """

    dim: int = 32
    in_channels: int = 3
    out_channels: int = 3
    num_blocks: tuple[int, ...] = (4, 6, 6, 8)
    num_dec_blocks: tuple[int, ...] = (2, 4, 4)
    heads: tuple[int, ...] = (1, 2, 4, 8)
    num_refinement_blocks: int = 4
    ffn_hidden_ratio: float = 2.0
    layernorm_bias: bool = True
    decoder_bias: bool = False
    expert_ranks: tuple[tuple[int, ...], ...] = ((4, 8, 16, 32), (8, 16, 32, 64), (16, 32, 64, 128))
    top_k: int = 1

    def __post_init__(self) -> None:
        levels = len(self.num_blocks)
        if levels < 2:
            raise ConfigError("num_blocks needs at least one encoder level and the latent")
        for name in ("num_dec_blocks", "expert_ranks"):
            if len(getattr(self, name)) != levels - 1:
                raise ConfigError(f"{name} needs {levels - 1} entries, one per decoder level")
        if len(self.heads) != levels:
            raise ConfigError(f"heads needs {levels} entries, one per level")
        if len({len(r) for r in self.expert_ranks}) != 1:
            raise ConfigError("every decoder level needs the same number of experts")
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(f"top_k must be in 1..{self.num_experts}, got {self.top_k}")

    @property
    def levels(self) -> int:
        return len(self.num_blocks)

    @property
    def num_experts(self) -> int:
        return len(self.expert_ranks[0])

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        """FFT patch side of each expert: 4, 8, 16, 32 — growing receptive field with cost."""
        return tuple(2 ** (i + 2) for i in range(self.num_experts))

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (one 2x down-sampling per encoder level)."""
        return 2 ** (self.levels - 1)

    def level_dim(self, level: int) -> int:
        return self.dim * 2**level

    @property
    def freq_dim(self) -> int:
        return self.level_dim(self.levels - 1)

    @property
    def num_adapters(self) -> int:
        return sum(self.num_dec_blocks)

    def adapter_levels(self) -> list[int]:
        """Decoder level of each adapter in execution order (deepest level first)."""
        return [lvl for lvl in reversed(range(self.levels - 1)) for _ in range(self.num_dec_blocks[lvl])]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["expert_ranks"] = [list(r) for r in self.expert_ranks]
        for key in ("num_blocks", "num_dec_blocks", "heads"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MoCEConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("num_blocks", "num_dec_blocks", "heads"):
            if key in known:
                known[key] = tuple(known[key])
        if "expert_ranks" in known:
            known["expert_ranks"] = tuple(tuple(r) for r in known["expert_ranks"])
        return cls(**known)


def ranks_for(rank: int, rank_type: str, dim: int, num_experts: int) -> tuple[int, ...]:
    """The original's rank schedules (``rank_type``), used to cross-check hyper-parameters."""
    schedules = {
        "constant": lambda i: rank,
        "lin": lambda i: rank + i,
        "double": lambda i: rank + 2 * i,
        "exp": lambda i: rank ** (i + 1),
    }
    if rank_type == "spread":
        return tuple(dim // 2**i for i in range(num_experts))[::-1]
    if rank_type == "fact":
        import math

        return tuple(math.factorial(rank + i) for i in range(num_experts))
    if rank_type not in schedules:
        raise ConfigError(f"unknown rank_type {rank_type!r}")
    return tuple(schedules[rank_type](i) for i in range(num_experts))


def config_from_hyperparameters(opt: Mapping[str, Any], top_k_default: int = 1) -> MoCEConfig:
    """Build the config the original training script would build from its ``opt`` namespace."""
    try:
        dim = int(opt["dim"])
        num_blocks = tuple(int(b) for b in opt["num_blocks"])
        num_experts = int(opt.get("num_exp_blocks", 4))
        levels = len(num_blocks)
        ranks = tuple(
            ranks_for(int(opt.get("latent_dim", 2)), str(opt.get("rank_type", "constant")), dim * 2**lvl, num_experts)
            for lvl in range(levels - 1)
        )
        return MoCEConfig(
            dim=dim,
            num_blocks=num_blocks,
            num_dec_blocks=tuple(int(b) for b in opt["num_dec_blocks"]),
            heads=tuple(int(h) for h in opt["heads"]),
            num_refinement_blocks=int(opt["num_refinement_blocks"]),
            expert_ranks=ranks,
            top_k=int(opt.get("topk", top_k_default)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"hyper_parameters are incomplete or malformed: {exc}") from exc


def _count(keys: set[str], pattern: str) -> int:
    """Number of distinct indices matched by the single ``(\\d+)`` group in ``pattern``."""
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def _shape(shapes: Mapping[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ConfigError(f"not a MoCE-IR state dict: missing key '{key}'")
    return tuple(shapes[key])


def derive_config(shapes: Mapping[str, tuple[int, ...]], top_k: int = 1) -> MoCEConfig:
    """Derive the architecture from a mapping of state-dict key -> tensor shape."""
    keys = set(shapes)
    out_ch, in_ch = _shape(shapes, "patch_embed.proj.weight")[:2]
    dim = out_ch
    enc_levels = _count(keys, r"enc\.(\d+)\.0\.layers\.")
    if enc_levels == 0:
        raise ConfigError("not a MoCE-IR state dict: no encoder blocks ('enc.0.0.layers.*')")
    levels = enc_levels + 1
    num_blocks = [_count(keys, rf"enc\.{lvl}\.0\.layers\.(\d+)\.") for lvl in range(enc_levels)]
    num_blocks.append(_count(keys, r"latent\.layers\.(\d+)\."))
    heads = [_shape(shapes, f"enc.{lvl}.0.layers.0.mixer.temperature")[0] for lvl in range(enc_levels)]
    heads.append(_shape(shapes, "latent.layers.0.mixer.temperature")[0])
    # dec.i runs level (levels - 2 - i): the original lists decoders deepest first.
    num_dec = [_count(keys, rf"dec\.{levels - 2 - lvl}\.2\.layers\.(\d+)\.") for lvl in range(levels - 1)]
    ranks = []
    for lvl in range(levels - 1):
        prefix = f"dec.{levels - 2 - lvl}.2.layers.0.adapter.experts"
        n_exp = _count(keys, rf"{re.escape(prefix)}\.(\d+)\.")
        ranks.append(tuple(_shape(shapes, f"{prefix}.{e}.0.proj.0.weight")[0] for e in range(n_exp)))
    hidden = _shape(shapes, "enc.0.0.layers.0.ffn.project_in.weight")[0] // 2
    config = MoCEConfig(
        dim=dim,
        in_channels=in_ch,
        out_channels=_shape(shapes, "output.weight")[0],
        num_blocks=tuple(num_blocks),
        num_dec_blocks=tuple(num_dec),
        heads=tuple(heads),
        num_refinement_blocks=_count(keys, r"refinement\.layers\.(\d+)\."),
        ffn_hidden_ratio=hidden / dim,
        layernorm_bias="enc.0.0.layers.0.norms.0.body.bias" in keys,
        decoder_bias=f"dec.{levels - 2}.2.layers.0.shared.qkv.bias" in keys,
        expert_ranks=tuple(ranks),
        top_k=top_k,
    )
    return config


def cross_check(derived: MoCEConfig, declared: MoCEConfig) -> None:
    """Fail on the first field where the checkpoint's tensors and its hyper-parameters disagree."""
    for name in ("dim", "num_blocks", "num_dec_blocks", "heads", "num_refinement_blocks", "expert_ranks"):
        have, want = getattr(derived, name), getattr(declared, name)
        if have != want:
            raise ConfigError(
                f"hyper_parameters disagree with the weights on '{name}': tensors say {have}, "
                f"hyper_parameters say {want}"
            )
