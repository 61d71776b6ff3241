"""CUDA graphs for the PyTorch backend: each graph of the plan captured once per shape, then replayed.

At batch 1 the PyTorch CUDA path is bound by kernel launches (thousands of small kernels per image);
a CUDA graph launches a whole segment or expert as one. :class:`GraphCache` captures a graph of the
package per key (its name and its inputs' shapes and dtypes) on first use and replays it after;
experts run on row counts padded to a power of two (:func:`bucket_rows`), so a batch of N images
needs at most log2(N) + 1 captures per expert. The host still reads each adapter's router logits
(one wait per adapter) to choose the experts whose graphs to replay.

:func:`capture_conditional` captures the whole routed forward instead, its experts as IF nodes
(:mod:`moce.runtime.device_routing`): one replay per batch and no host wait at all.

Capturing needs a CUDA device: :func:`capture_cuda` uses PyTorch's documented ``torch.cuda.CUDAGraph``
and ``torch.cuda.graph``; IF nodes use ``CUDAGraph.begin_capture_to_if_node`` (what PyTorch's own
``torch.cond`` capture uses). Unverified on a GPU here; the cache, the padding and the branch
logic are tested on the CPU with stand-ins.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from moce.runtime.device_routing import Branches, EveryBranch, GraphBranches

Feeds = dict[str, Any]
Replay = Callable[[Feeds], Feeds]
Capture = Callable[[Callable[[Feeds], Feeds], Feeds], Replay]


def bucket_rows(rows: int) -> int:
    """The power of two at or above ``rows``: the batch an expert's captured graph runs at."""
    return 1 << max(0, rows - 1).bit_length()


class GraphCache:
    """Replays of captured graphs, keyed by graph name and input shapes and dtypes, least recently
    used dropped past ``limit`` (each capture holds its static buffers on the device)."""

    def __init__(self, capture: Capture, limit: int = 128) -> None:
        self.capture = capture
        self.limit = limit
        self.replays: OrderedDict[tuple, Replay] = OrderedDict()
        self.captures = 0

    @staticmethod
    def key(graph: str, feeds: Feeds) -> tuple:
        return (graph, *((name, tuple(v.shape), str(v.dtype)) for name, v in sorted(feeds.items())))

    def run(self, graph: str, fn: Callable, feeds: Feeds, capture: Callable[..., Replay] | None = None) -> Feeds:
        """Replay ``graph`` on ``feeds``, captured first (by ``capture``, default the cache's) if new."""
        key = self.key(graph, feeds)
        if key not in self.replays:
            self.replays[key] = (capture or self.capture)(fn, feeds)
            self.captures += 1
            if len(self.replays) > self.limit:
                self.replays.popitem(last=False)
        self.replays.move_to_end(key)
        return self.replays[key](feeds)


def capture_cuda(fn: Callable[[Feeds], Feeds], feeds: Feeds) -> Replay:
    """Capture ``fn`` on copies of ``feeds`` as a CUDA graph (after two warm-up runs on a side stream,
    as PyTorch's documentation prescribes); the replay copies new feeds in and the outputs out."""
    return _capture(fn, lambda f, _graph: fn(f), feeds)


def capture_conditional(fn: Callable[[Feeds, Branches], Feeds], feeds: Feeds) -> Replay:
    """Capture ``fn(feeds, branches)`` (see :mod:`moce.runtime.device_routing`) as one CUDA graph whose
    branches are IF nodes; the warm-up runs every branch, so each expert's kernels are loaded."""
    return _capture(lambda f: fn(f, EveryBranch()), lambda f, graph: fn(f, GraphBranches(graph)), feeds)


def _capture(warm: Callable[[Feeds], Feeds], fn: Callable[[Feeds, Any], Feeds], feeds: Feeds) -> Replay:
    """Two warm-up runs of ``warm`` on a side stream, then ``fn(static feeds, graph)`` captured into ``graph``."""
    import torch

    static_in = {name: value.clone() for name, value in feeds.items()}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(2):
            warm(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_out = fn(static_in, graph)

    def replay(new: Feeds) -> Feeds:
        with torch.inference_mode():
            for name, value in new.items():
                static_in[name].copy_(value)
            graph.replay()
            return {name: value.clone() for name, value in static_out.items()}  # the next replay overwrites

    return replay
