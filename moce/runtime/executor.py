"""Backend-agnostic execution of a model package: split plan, conditional or dense graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moce.errors import PackageError
from moce.model.plan import AdapterStep, SegmentStep, walk
from moce.names import (
    CORE_MASK,
    EXPERT_INPUTS,
    EXPERT_OUTPUT,
    IMAGE,
    IMAGE_STATS,
    RESTORED,
    ROUTING_MODES,
    TILE_STATS,
    USE_IMAGE_STATS,
    WHOLE_GRAPHS,
    expert_graph,
    probs_name,
    route_name,
    segment_graph,
    tile_segment_graph,
)
from moce.package.manifest import Manifest
from moce.routing import Route, Routing, dispatch, impose, route
from moce.runtime.runners import GraphRunner


@dataclass
class TileFeeds:
    """What tile segments need: each tile's core mask and, after a first pass, the image's sums.

    ``image_stats[s]`` is segment ``s``'s sums over the whole image, ``[K]`` for every row or
    ``[N, K]`` per row (the previous pass's ``PlanResult.tile_stats`` added over all tiles of
    the image); None: every tile uses its own core's sums.
    """

    core_mask: np.ndarray  # [N, 1, H, W] float32, 1 on the pixels this tile owns
    image_stats: dict[int, np.ndarray] | None = None


@dataclass
class PlanResult:
    restored: np.ndarray
    routings: list[Routing]
    expert_calls: list[tuple[int, int, int]] = field(default_factory=list)  # (adapter, expert, batch)
    tile_stats: dict[int, np.ndarray] = field(default_factory=dict)  # segment -> [N, K] float64 per row


def expert_flops(costs: list[list[float]], routings: list[Routing], dense: bool, pixels: int) -> tuple[float, float]:
    """Expert FLOPs run and those a dense pass would run, for ``pixels`` per sample.

    ``costs`` is :meth:`Manifest.expert_flops_per_pixel`; ``dense``: every expert ran.
    """
    run = all_experts = 0.0
    for adapter_costs, routing in zip(costs, routings):
        for row in routing.experts:
            run += (sum(adapter_costs) if dense else sum(adapter_costs[e] for e in row)) * pixels
            all_experts += sum(adapter_costs) * pixels
    return run, all_experts


class PlanExecutor:
    """Runs segment -> route -> chosen experts -> next segment with any :class:`GraphRunner`."""

    def __init__(self, manifest: Manifest, runner: GraphRunner) -> None:
        self.manifest = manifest
        self.runner = runner
        self.plan = manifest.plan()
        self.top_k = manifest.top_k

    def run(
        self,
        image: np.ndarray,
        mode: str = "split",
        forced: list[Routing] | None = None,
        tiles: TileFeeds | None = None,
        imposed: Route | None = None,
    ) -> PlanResult:
        """Restore a padded float32 NCHW batch whose sides are multiples of the package's.

        ``forced`` imposes one routing per adapter (one row, applied to every sample): tiles
        of one image then all run the experts that the whole image chose. ``tiles`` runs the
        tile segments, which report (and, given them, use) image-wide sums. ``imposed`` makes
        every sample run these experts per adapter, gated by its own router (:func:`impose`).
        """
        if mode == "split":
            return self._run_split(image, forced, tiles, imposed)
        if forced is not None or tiles is not None or imposed is not None:
            raise ValueError("forced routes and tile statistics need the split routing mode")
        if mode in WHOLE_GRAPHS:
            return self._run_whole(image, mode)
        raise ValueError(f"unknown routing mode {mode!r}; choose from {ROUTING_MODES}")

    def _segment(self, index: int, feeds: dict, tiles: TileFeeds | None, stats: dict[int, np.ndarray]) -> dict:
        """Run segment ``index``; a tile segment also gets the tile feeds and reports its sums."""
        r = self.runner
        if tiles is None:
            return r.infer(segment_graph(index), feeds)
        name = tile_segment_graph(index)
        if not self.manifest.has_graph(name):
            raise PackageError(
                f"{self.manifest.root}: no tile graphs (exported with --no-tiles or by an older moce); "
                "re-export it or restore with --tile-passes 1"
            )
        batch = tiles.core_mask.shape[0]
        size = self.manifest.graph_entries[name].stats_size
        imposed = tiles.image_stats is not None
        image_stats = np.broadcast_to(tiles.image_stats[index], (batch, size)) if imposed else np.zeros((batch, size))
        made = r.infer(
            name,
            {
                **feeds,
                CORE_MASK: r.arrays.from_host(tiles.core_mask),
                USE_IMAGE_STATS: r.arrays.from_host(np.array([1.0 if imposed else 0.0], np.float32)),
                IMAGE_STATS: r.arrays.from_host(np.ascontiguousarray(image_stats, dtype=np.float32)),
            },
        )
        stats[index] = r.arrays.to_host(made.pop(TILE_STATS)).astype(np.float64)
        return made

    def _run_split(
        self, image: np.ndarray, forced: list[Routing] | None, tiles: TileFeeds | None, imposed: Route | None
    ) -> PlanResult:
        r = self.runner
        routings: list[Routing] = []
        calls: list[tuple[int, int, int]] = []
        stats: dict[int, np.ndarray] = {}

        def adapter(step: AdapterStep, env: dict) -> Any:
            if imposed is not None:
                routing = impose(r.arrays.to_host(env[step.logits]), imposed[step.index])
            elif forced is None:
                routing = route(r.arrays.to_host(env[step.logits]), self.top_k)
            else:
                routing = forced[step.index].repeat(image.shape[0])
            routings.append(routing)
            return self._run_adapter(step, env, routing, calls)

        def segment(step: SegmentStep, env: dict) -> dict:
            return self._segment(step.index, {n: env[n] for n in step.inputs}, tiles, stats)

        env = walk(self.plan, {IMAGE: r.arrays.from_host(image)}, segment, adapter)
        return PlanResult(r.arrays.to_host(env[RESTORED]), routings, calls, stats)

    def _run_adapter(self, step: AdapterStep, env: dict, routing: Routing, calls: list[tuple[int, int, int]]) -> Any:
        """Each chosen expert graph runs once on the rows that chose it (:func:`moce.routing.dispatch`);
        the gate is one of the graph's inputs. The other experts never run."""
        r = self.runner

        def run(expert: int, x: Any, shared: Any, gates: np.ndarray) -> Any:
            calls.append((step.index, expert, len(gates)))
            gate = r.arrays.from_host(gates.reshape(-1, 1).astype(np.float32))
            return r.infer(expert_graph(step.index, expert), dict(zip(EXPERT_INPUTS, (x, shared, gate))))[EXPERT_OUTPUT]

        x, shared = (env[n] for n in step.inputs)
        return dispatch(x, shared, routing.gated_groups(), routing.experts.shape[0], run, r.arrays)

    def _run_whole(self, image: np.ndarray, mode: str) -> PlanResult:
        """One call per batch where the runner takes batches (dense), else per image (``If`` graphs)."""
        r = self.runner
        chunks = [image] if mode in r.batched_whole_graphs else [image[i : i + 1] for i in range(image.shape[0])]
        host, device = r.arrays.to_host, r.arrays.from_host
        results = [{n: host(v) for n, v in r.infer(mode, {IMAGE: device(chunk)}).items()} for chunk in chunks]
        adapters = [s.index for s in self.plan if isinstance(s, AdapterStep)]
        routings = []
        for a in adapters:
            experts = np.concatenate([r[route_name(a)] for r in results]).astype(np.int64)
            probs = np.concatenate([r[probs_name(a)] for r in results])
            routings.append(Routing(experts=experts, gates=np.take_along_axis(probs, experts, 1), probs=probs))
        return PlanResult(np.concatenate([r[RESTORED] for r in results]), routings)
