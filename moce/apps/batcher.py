"""Grouping images into inference calls: same-sized images batched, larger ones tiled alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import numpy as np

from moce.errors import InputError
from moce.routing import Route
from moce.runtime.restorer import ImageResult, Restorer
from moce.runtime.tile_plan import TilePlan


class Restoring(Protocol):
    """What a batcher needs of its session: the restorer (activated on first use), and the note to
    give when an image is first tiled."""

    @property
    def restorer(self) -> Restorer: ...

    def tiled_once(self) -> None: ...


T = TypeVar("T")


class Batcher(Generic[T]):
    """The one place that groups images into inference calls: consecutive same-sized untiled
    images, up to ``batch``, run together; an image larger than a tile runs alone, in tiles.

    ``done(item, outcome)`` receives each item's :class:`ImageResult`, or the exception its call
    raised (every item of a failed call gets it). At most ``batch`` images are held at a time.
    An image given a ``route`` (:func:`moce.routing.impose`) runs only with images given the same.
    """

    def __init__(
        self,
        session: Restoring,
        done: Callable[[T, ImageResult | Exception], None],
        tiles: Callable[[int], None] | None = None,
        tile_done: Callable[[int], None] | None = None,
    ) -> None:
        self.session, self.done = session, done
        self.on_tiles, self.on_tile_done = tiles, tile_done
        self.pending: list[tuple[T, np.ndarray]] = []
        self.plans: list[TilePlan] = []
        self.route: Route | None = None  # the pending images'

    def add(self, item: T, rgb: np.ndarray, route: Route | None = None) -> None:
        restorer = self.session.restorer
        try:
            plan = restorer.plan(rgb)
        except InputError as exc:  # over the memory budget: this image fails, the others go on
            self.flush()
            self.done(item, exc)
            return
        if plan.tiled:
            self.flush()
            self._tiled(item, rgb, plan, route)
            return
        if self.pending and (self.pending[0][1].shape != rgb.shape or self.route != route):
            self.flush()
        self.route = route
        self.pending.append((item, rgb))
        self.plans.append(plan)
        if len(self.pending) >= restorer.options.batch:
            self.flush()

    def flush(self) -> None:
        items, self.pending = self.pending, []
        plans, self.plans = self.plans, []
        if not items:
            return
        start = time.perf_counter()
        try:
            results = self.session.restorer.restore_batch([rgb for _, rgb in items], self.route)
        except Exception as exc:  # noqa: BLE001 - the caller decides what a failed call means
            for item, _ in items:
                self.done(item, exc)
            return
        seconds = (time.perf_counter() - start) / len(items)
        for (item, _), result, plan in zip(items, results, plans):
            result.seconds, result.plan = seconds, plan
            self.done(item, result)

    def _tiled(self, item: T, rgb: np.ndarray, plan: TilePlan, route: Route | None) -> None:
        restorer = self.session.restorer
        self.session.tiled_once()
        start = time.perf_counter()
        try:
            if self.on_tiles:
                self.on_tiles(plan.tiles * plan.passes)
            result = restorer.restore_tiled(rgb, self.on_tile_done, plan, route)
        except Exception as exc:  # noqa: BLE001 - the caller decides what a failed image means
            self.done(item, exc)
            return
        result.seconds = time.perf_counter() - start
        self.done(item, result)
