"""Parameter and FLOP accounting per expert, for `moce inspect`, manifests and reports.

FLOPs are counted by ``torch.utils.flop_counter`` (convolutions and matrix products, 2 per
multiply-add) with the experts' FFT in its exported DFT-matrix form, i.e. what the deployed
graphs compute; element-wise work is not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from moce.model.network import MoCEIR


@dataclass(frozen=True)
class ExpertCost:
    adapter: int
    level: int
    expert: int
    rank: int
    patch_size: int
    params: int
    flops: int
    complexity: float

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(fn, *args) -> int:  # noqa: ANN001 - any callable on tensors
    """FLOPs of one call, counted on meta-free real tensors under ``FlopCounterMode``.

    Counts the form that runs: callers wanting the exported graphs' cost count a model made by
    :func:`moce.export.patches.export_form` (``torch.fft`` ops are not counted at all).
    """
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def expert_costs(model: MoCEIR, height: int, width: int) -> list[ExpertCost]:
    """Cost of every expert of every adapter for one ``height`` x ``width`` image."""
    costs = []
    config = model.config
    for a, level in enumerate(config.adapter_levels()):
        adapter = model.adapter(a)
        dim = config.level_dim(level)
        h, w = height // 2**level, width // 2**level
        x = torch.zeros(1, dim, h, w)
        for e in range(config.num_experts):
            expert = adapter.expert(e)
            costs.append(
                ExpertCost(
                    adapter=a,
                    level=level,
                    expert=e,
                    rank=config.expert_ranks[level][e],
                    patch_size=config.patch_sizes[e],
                    params=count_params(expert),
                    flops=count_flops(expert, x, x),
                    complexity=float(adapter.routing.complexity[e]),
                )
            )
    return costs
