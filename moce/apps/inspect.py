"""`moce inspect`: what a checkpoint holds, derived from its tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moce.export.patches import export_form
from moce.model.checkpoint import load_model
from moce.model.complexity import count_params, expert_costs
from moce.runtime.resolve import open_model

SIGNATURE = "moce inspect"
"""What ``--json`` files carry (:mod:`moce.outputs`)."""


def inspect_checkpoint(path: str | Path, height: int = 256, width: int = 256) -> dict[str, Any]:
    """Config, parameter counts and per-adapter expert costs at ``height`` x ``width``, of a
    checkpoint or of a model package (its weights)."""
    if Path(path).is_dir():
        manifest = open_model(path)
        model, loaded = load_model(manifest.weights_file, top_k=manifest.top_k)
    else:
        model, loaded = load_model(path)
    experts = expert_costs(export_form(model), height, width)  # the costs of the forms the graphs run
    expert_params = sum(c.params for c in experts)
    return {
        "checkpoint": str(loaded.path),
        "sha256": loaded.sha256,
        "config": loaded.config.to_dict(),
        "params": {
            "total": count_params(model),
            "experts": expert_params,
            "trunk_and_routers": count_params(model) - expert_params,
        },
        "flops_at": [height, width],
        "adapters": [
            {"adapter": a, "level": lvl, "experts": [c.to_dict() for c in experts if c.adapter == a]}
            for a, lvl in enumerate(loaded.config.adapter_levels())
        ],
    }
