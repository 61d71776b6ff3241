"""Restoring whole images with a plan executor: padding, batching, tiling, routing per image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from moce.errors import InputError
from moce.model.config import padding_for
from moce.routing import Route, Routing
from moce.runtime.executor import PlanExecutor, PlanResult, TileFeeds, expert_flops
from moce.runtime.tile_plan import (
    AUTO,
    AUTO_PASSES,
    CPU_TILE_PIXELS,
    FIXED_PASSES,
    MemoryModel,
    TilePlan,
    auto_plan,
    fixed_plan,
)
from moce.runtime.tiling import Blender, Tile, batches, check_tiling, core_masks, tiles_for

ROUTE_PER = ("image", "tile")

AUTO_ROUTE_SIZE = 512
"""The routing pass's longest side under ``--tile auto`` (``--tile N``: N), as with 0.7's default tile."""

SMALL = 512 * 512
"""Under the default budget, images up to this many pixels run untiled without consulting the
memory model (0.7 ran them untiled too), so small images never wait for a measurement."""


@dataclass
class RestoreOptions:
    routing: str = "split"
    tile: int | str = 512  # auto (a session's default): from a MemoryBudget; N: tiles of N px for larger images
    overlap: int = 32
    route_per: str = "image"
    batch: int = 1
    route_size: int | None = None  # longest side of the routing pass; default: the tile size (auto: 512)
    tile_passes: int | None = None  # with --route-per image: passes sharing image-wide sums; None: 1 auto, 3 fixed
    max_memory: float | None = None  # --tile auto's budget in bytes; None: a share of the memory available

    def passes(self) -> int:
        """Passes over the tiles: image-wide sums need the image routed as one (``--route-per image``)."""
        if self.route_per != "image":
            return 1
        if self.tile_passes is not None:
            return self.tile_passes
        return AUTO_PASSES if self.tile == AUTO else FIXED_PASSES


@dataclass
class MemoryBudget:
    """``--tile auto``'s budget in bytes and the session's memory model, measured on first use."""

    bytes: float
    model: Callable[[], MemoryModel]
    explicit: bool = False  # --max-memory given: every image is planned, small ones too
    why: str = ""


def check_restore_options(options: RestoreOptions, multiple: int) -> None:
    """Refuse option values no run could use (before any backend loads, where the caller can)."""
    if options.route_per not in ROUTE_PER:
        raise InputError(f"--route-per must be one of {', '.join(ROUTE_PER)}, got {options.route_per}")
    if options.batch < 1:
        raise InputError(f"--batch must be at least 1, got {options.batch}")
    if options.tile == AUTO:
        check_tiling(max(multiple, 4 * options.overlap), options.overlap, multiple)
    elif isinstance(options.tile, int) and not isinstance(options.tile, bool):
        check_tiling(options.tile, options.overlap, multiple)
    else:
        raise InputError(f"--tile must be auto or a multiple of {multiple}, got {options.tile}")
    if options.tile_passes is not None and options.tile_passes < 1:
        raise InputError(f"--tile-passes must be at least 1, got {options.tile_passes}")
    if options.max_memory is not None and options.max_memory <= 0:
        raise InputError(f"--max-memory must be a positive size such as 8G, got {options.max_memory}")


@dataclass
class ImageResult:
    """One restored image with the routing it used and the expert work it did.

    ``routes[a]`` are the experts adapter ``a`` ran (a list: top-k); ``probs[a]`` the router's
    softmax. With ``--route-per tile`` each tile routes itself: ``routes`` is then the route
    most tiles took, ``probs`` is None and ``tile_routes`` has every tile's.
    """

    restored: np.ndarray  # HWC float32 RGB, unclamped
    routes: list[list[int]]
    probs: list[list[float]] | None
    tiles: int = 1
    expert_flops: float = 0.0
    dense_expert_flops: float = 0.0
    tile_routes: list[list[list[int]]] = field(default_factory=list)
    seconds: float = 0.0  # restoring time (set by the caller that timed it)
    plan: TilePlan | None = None  # how the image was cut (None: untiled in a batch of its size)

    @property
    def expert_compute_skipped(self) -> float:
        """The share of the expert FLOPs a dense pass would run that routing skipped."""
        return skipped_share(self.expert_flops, self.dense_expert_flops)


def skipped_share(run: float, dense: float) -> float:
    """The share of ``dense`` expert FLOPs that running ``run`` of them skipped (0 with none)."""
    return 1.0 - run / dense if dense else 0.0


def _routes(rows: list[Routing]) -> tuple[list[list[int]], list[list[float]]]:
    return [r.experts[0].tolist() for r in rows], [r.probs[0].tolist() for r in rows]


def pad_nchw(images: np.ndarray, multiple: int) -> tuple[np.ndarray, int, int]:
    h, w = images.shape[-2:]
    pad_h, pad_w = padding_for(h, w, multiple)
    if pad_h or pad_w:
        images = np.pad(images, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
    return images, h, w


class Restorer:
    """Turns HWC images into restored HWC images through a :class:`PlanExecutor`."""

    def __init__(self, executor: PlanExecutor, options: RestoreOptions, memory: MemoryBudget | None = None) -> None:
        self.executor = executor
        self.options = options
        self.memory = memory
        self.multiple = executor.manifest.size_multiple
        check_restore_options(options, self.multiple)
        if options.tile == AUTO and memory is None:
            raise InputError("--tile auto needs a memory budget (open the model with moce.open)")
        self.expert_flops_pp = executor.manifest.expert_flops_per_pixel()

    def plan(self, image: np.ndarray) -> TilePlan:
        """How ``image`` runs: ``--tile N``'s square tiles, or ``--tile auto``'s choice from memory."""
        opts = self.options
        h, w = (-(-side // self.multiple) * self.multiple for side in image.shape[:2])
        if opts.tile != AUTO:
            return fixed_plan(h, w, int(opts.tile), opts.overlap, opts.passes())
        assert self.memory is not None
        if not self.memory.explicit and h * w <= SMALL:
            return TilePlan(None, None, 1, 1, f"untiled: at most {SMALL} pixels")
        model = self.memory.model()
        return auto_plan(
            h,
            w,
            model=model,
            budget=self.memory.bytes,
            overlap=opts.overlap,
            multiple=self.multiple,
            batch=opts.batch,
            passes=opts.passes(),
            tiles_allowed=opts.routing == "split" or opts.route_per == "tile",
            max_tile_pixels=CPU_TILE_PIXELS if model.memory == "RAM" else None,
        )

    def _flops(self, routings: list[Routing], pixels: int) -> tuple[float, float]:
        """Expert FLOPs run and those a dense pass would run, for ``pixels`` per sample."""
        return expert_flops(self.expert_flops_pp, routings, self.options.routing == "dense", pixels)

    def restore_batch(self, images: list[np.ndarray], imposed: Route | None = None) -> list[ImageResult]:
        """Restore same-sized images in one call each of up to ``batch`` (untiled); ``imposed``:
        the experts every image runs (:func:`moce.routing.impose`), else each routes itself."""
        nchw = np.stack([im.transpose(2, 0, 1) for im in images]).astype(np.float32, copy=False)
        padded, h, w = pad_nchw(nchw, self.multiple)
        result = self.executor.run(padded, self.options.routing, imposed=imposed)
        pixels = padded.shape[2] * padded.shape[3]
        out = []
        for i in range(len(images)):
            rows = [r.row(i) for r in result.routings]
            done, dense = self._flops(rows, pixels)
            out.append(ImageResult(result.restored[i, :, :h, :w].transpose(1, 2, 0), *_routes(rows), 1, done, dense))
        return out

    def image_routing(self, image: np.ndarray) -> list[Routing]:
        """Routes for a whole image from one pass at reduced size (longest side <= route size)."""
        import cv2

        limit = self.options.route_size or (AUTO_ROUTE_SIZE if self.options.tile == AUTO else int(self.options.tile))
        h, w = image.shape[:2]
        scale = min(1.0, limit / max(h, w))
        small = (
            image
            if scale == 1.0
            else cv2.resize(image, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
        )
        padded, _, _ = pad_nchw(small.transpose(2, 0, 1)[None], self.multiple)
        return self.executor.run(padded, "split").routings

    def restore_tiled(
        self,
        image: np.ndarray,
        on_tile: Callable[[int], None] | None = None,
        plan: TilePlan | None = None,
        imposed: Route | None = None,
    ) -> ImageResult:
        """Overlapping tiles, batched, feather-blended; routed once per image or per tile.

        With ``--route-per image`` and more than one pass, every pass reports each tile's share
        of the network's image-wide sums and the next pass imposes their total, so the tiles
        converge on what the whole image computes (see :mod:`moce.model.global_stats`). The
        first pass runs the routes of a reduced-size pass; later ones route on image sums.
        ``imposed``: every tile of every pass runs these experts instead.
        """
        opts = self.options
        if opts.route_per == "image" and opts.routing != "split":
            raise InputError("--route-per image needs --routing split (only the split plan can impose routes on tiles)")
        padded, h, w = pad_nchw(image.transpose(2, 0, 1)[None].astype(np.float32), self.multiple)
        _, c, ph, pw = padded.shape
        plan = plan or self.plan(image)
        if not plan.tiled:  # asked to tile an image that fits: one tile, the whole padded image
            plan = TilePlan(ph, pw, opts.passes(), 1, plan.reason, plan.estimate)
        forced = self.image_routing(image) if opts.route_per == "image" and imposed is None else None
        tiles = tiles_for(ph, pw, plan.tile_h or ph, opts.overlap, plan.tile_w)
        passes = plan.passes
        masks = core_masks(tiles, ph, pw, self.multiple) if passes > 1 else {}
        flops = [0.0, 0.0]
        image_stats: dict[int, np.ndarray] | None = None
        for index in range(passes):
            last = index == passes - 1
            sums: dict[int, np.ndarray] = {}
            blender = Blender(c, ph, pw, opts.overlap)
            tile_routes: list[list[list[int]]] = []
            first: PlanResult | None = None
            for group in batches(tiles, opts.batch):
                crops = np.stack([padded[0, :, t.top : t.top + t.height, t.left : t.left + t.width] for t in group])
                feeds = TileFeeds(np.stack([masks[t] for t in group]), image_stats) if passes > 1 else None
                result = self.executor.run(
                    crops, opts.routing, forced if image_stats is None else None, feeds, imposed=imposed
                )
                first = first or result
                for s, total in result.tile_stats.items():
                    sums[s] = sums.get(s, 0.0) + total.sum(0)
                if last:
                    self._blend(blender, group, result, tile_routes)
                for i, n in enumerate(self._flops(result.routings, crops.shape[2] * crops.shape[3])):
                    flops[i] += n
                if on_tile:
                    on_tile(len(group))
            image_stats = sums
        routes, probs = self._tiled_routes(forced, first, tile_routes, passes, imposed)
        restored = blender.result()[:, :h, :w].transpose(1, 2, 0)
        return ImageResult(restored, routes, probs, len(tiles) * passes, *flops, tile_routes, plan=plan)

    @staticmethod
    def _blend(blender: Blender, group: list[Tile], result: PlanResult, tile_routes: list[list[list[int]]]) -> None:
        for i, tile in enumerate(group):
            blender.add(tile, result.restored[i])
            tile_routes.append([r.experts[i].tolist() for r in result.routings])

    def _tiled_routes(
        self,
        forced: list[Routing] | None,
        first: PlanResult | None,
        tile_routes: list[list[list[int]]],
        passes: int,
        imposed: Route | None = None,
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        """The image's routes: imposed, from image-wide sums (later passes), the reduced pass, or
        the tiles' majority."""
        if imposed is not None:
            return [list(experts) for experts in imposed], None
        if forced is None:
            return _majority(tile_routes), None
        if passes > 1 and first is not None:
            return _routes([r.row(0) for r in first.routings])
        return _routes(forced)


def _majority(tile_routes: list[list[list[int]]]) -> list[list[int]]:
    """Per adapter, the route most tiles took (ties: the lower expert indices)."""
    majority = []
    for a in range(len(tile_routes[0])):
        choices = [tuple(t[a]) for t in tile_routes]
        majority.append(list(max(sorted(set(choices)), key=choices.count)))
    return majority
