"""A test's view of what a runner ran: runners keep no log of their own (a long-lived server's
would grow without bound), so a test wraps the runner it wants to watch."""

from __future__ import annotations

from typing import Any

from moce.runtime.runners import GraphRunner


def record_calls(runner: GraphRunner) -> list[tuple[str, int]]:
    """``(graph, batch)`` of every inference ``runner`` makes from now on, appended as they run."""
    calls: list[tuple[str, int]] = []
    real = runner.infer

    def infer(graph: str, feeds: dict[str, Any]) -> dict[str, Any]:
        calls.append((graph, next(iter(feeds.values())).shape[0] if feeds else 0))
        return real(graph, feeds)

    runner.infer = infer  # type: ignore[method-assign]
    return calls
