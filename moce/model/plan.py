"""The network as an execution plan: dense trunk segments between routing points.

Segment ``s`` finishes decoder block ``s - 1`` (after its adapter) and runs up to block ``s``'s
router; adapter ``s`` then runs only the experts its router chose. The PyTorch model, the ONNX
exporter, the manifest and every runtime walk this same list of named tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from moce.model.config import MoCEConfig
from moce.names import FREQ_EMB, IMAGE, RESTORED, AdapterTensors, skip_name


@dataclass(frozen=True)
class SegmentStep:
    index: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class AdapterStep:
    """Route on ``logits``, run the chosen experts on ``inputs``, sum into ``output``."""

    index: int
    level: int
    logits: str
    inputs: tuple[str, str]
    output: str


Step = SegmentStep | AdapterStep


def tensor_levels(config: MoCEConfig) -> dict[str, int | None]:
    """Resolution level of every plan tensor (0 = full size), None for ``[batch, features]`` ones."""
    levels: dict[str, int | None] = {IMAGE: 0, RESTORED: 0, FREQ_EMB: None}
    levels.update({skip_name(level): level for level in range(config.levels - 1)})
    for a, level in enumerate(config.adapter_levels()):
        t = AdapterTensors(a)
        levels.update({t.shortcut: level, t.adapter_in: level, t.shared: level, t.adapter_out: level, t.logits: None})
    return levels


def first_adapter_of_level(config: MoCEConfig) -> dict[int, int]:
    """For each decoder level, the adapter index of its first block (where its skip joins)."""
    firsts: dict[int, int] = {}
    for a, lvl in enumerate(config.adapter_levels()):
        firsts.setdefault(lvl, a)
    return firsts


def build_plan(config: MoCEConfig) -> list[Step]:
    """Alternate segments and adapters: seg 0, adapter 0, seg 1, ..., adapter N-1, seg N."""
    n = config.num_adapters
    levels = config.adapter_levels()
    skip_users = {a: lvl for lvl, a in first_adapter_of_level(config).items()}
    steps: list[Step] = []
    for s in range(n + 1):
        inputs: list[str] = []
        outputs: list[str] = []
        if s == 0:
            inputs.append(IMAGE)
            outputs += [skip_name(lvl) for a, lvl in sorted(skip_users.items()) if a > 0]
            if n > 1:
                outputs.append(FREQ_EMB)
        else:
            prev = AdapterTensors(s - 1)
            inputs += [prev.shortcut, prev.adapter_out, prev.shared]
        if s == n:
            inputs.append(IMAGE)
            outputs.append(RESTORED)
        else:
            if s > 0:
                if s in skip_users:
                    inputs.append(skip_name(skip_users[s]))
                inputs.append(FREQ_EMB)
            cur = AdapterTensors(s)
            outputs += [cur.shortcut, cur.adapter_in, cur.shared, cur.logits]
        steps.append(SegmentStep(s, tuple(inputs), tuple(outputs)))
        if s < n:
            cur = AdapterTensors(s)
            steps.append(AdapterStep(s, levels[s], cur.logits, (cur.adapter_in, cur.shared), cur.adapter_out))
    return steps


def step_inputs(step: Step) -> tuple[str, ...]:
    return step.inputs if isinstance(step, SegmentStep) else (step.logits, *step.inputs)


def last_uses(plan: list[Step]) -> dict[str, int]:
    """Index of the last step reading each tensor, so executors can free it right after."""
    last: dict[str, int] = {}
    for i, step in enumerate(plan):
        for name in step_inputs(step):
            last[name] = i
    return last


def walk(
    plan: list[Step],
    env: dict[str, Any],
    segment: Callable[[SegmentStep, dict[str, Any]], Mapping[str, Any]],
    adapter: Callable[[AdapterStep, dict[str, Any]], Any],
) -> dict[str, Any]:
    """Execute ``plan`` on ``env`` (tensor name -> value, any tensor type): ``segment`` returns a
    segment's outputs, ``adapter`` an adapter's mixed output; each tensor is dropped after its last use.

    The one walk of the plan: the network's forward, the training objective and every runtime's
    executor supply the two step functions, so the order and the freeing are written once.
    """
    last = last_uses(plan)
    for i, step in enumerate(plan):
        if isinstance(step, SegmentStep):
            made = segment(step, env)
            env.update({name: made[name] for name in step.outputs})
        else:
            env[step.output] = adapter(step, env)
        for name in [n for n in env if last.get(n, -1) == i]:
            del env[name]
    return env
