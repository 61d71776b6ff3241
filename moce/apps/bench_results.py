"""`moce bench`'s results on disk and in a picture: the signed ``--json`` file (read back by
``--from-json``, older bare lists included) and the ``--chart`` PNG."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from moce._version import __version__
from moce.apps.bench_cases import REFERENCE, BenchResult, Case, speedups
from moce.imageio import write_chart
from moce.outputs import signed

SIGNATURE = "moce bench"
"""What bench's JSON results and chart carry: a rerun may replace them and nothing else."""


def _finite(value: float | None) -> float | None:
    """Strict JSON has no NaN or infinity: a skipped case's timings, and the PSNR of an output equal
    to eager's (``max_abs_vs_eager`` 0), are written as null."""
    return value if value is None or np.isfinite(value) else None


def to_json(results: list[BenchResult]) -> list[dict[str, Any]]:
    ups = speedups(results)
    return [
        {
            **asdict(r.case),
            "median_ms": _finite(r.median_ms),
            "p90_ms": _finite(r.p90_ms),
            "images_per_s": _finite(r.images_per_s()),
            "peak_mb": r.peak_mb,
            "expert_gflops": r.expert_gflops,
            "dense_expert_gflops": r.dense_expert_gflops,
            "trunk_gflops": r.trunk_gflops,
            "gflops": r.gflops,
            "gflops_per_s": _finite(r.gflops_per_s()),
            "gemm_peak_gflops": r.gemm_peak_gflops,
            "share_of_gemm_peak": _finite(r.share_of_peak()),
            "speedup_vs_eager": _finite(ups[r.case]),
            "max_abs_vs_eager": r.max_abs_vs_reference,
            "psnr_vs_eager": _finite(r.psnr_vs_reference),
            "route_agreement": r.route_agreement,
            "skipped": r.skipped,
            "cuda": r.cuda,
            "kept_freed_memory": r.kept_freed_memory,
            "times_s": r.times,
        }
        for r in results
    ]


def saved_json(results: list[BenchResult]) -> dict[str, Any]:
    """What ``--json`` writes: the rows of :func:`to_json`, signed as bench's."""
    return signed({"moce": __version__, "results": to_json(results)}, SIGNATURE)


def saved_rows(data: Any) -> list[dict[str, Any]]:
    """The rows of a file ``--json`` wrote (a bare list before moce 0.8.0)."""
    return data["results"] if isinstance(data, dict) else data


def _psnr_of(row: dict[str, Any]) -> float | None:
    """A saved PSNR: null is infinite where the output equalled eager's (JSON has no infinity)."""
    if row["psnr_vs_eager"] is None and row["max_abs_vs_eager"] == 0:
        return float("inf")
    return row["psnr_vs_eager"]


def from_json(rows: list[dict[str, Any]]) -> list[BenchResult]:
    """Results back from ``to_json``: a run saved on another machine (a lent GPU, say) tabulated and
    charted here. Derived columns are recomputed from the raw times."""
    return [
        BenchResult(
            Case(r["backend"], r["routing"], r["size"], r["batch"], r["width"], r["precision"]),
            times=list(r["times_s"]),
            peak_mb=r["peak_mb"],
            expert_gflops=r["expert_gflops"],
            dense_expert_gflops=r["dense_expert_gflops"],
            trunk_gflops=r["trunk_gflops"],
            gemm_peak_gflops=r["gemm_peak_gflops"],
            cuda=bool(r["cuda"]),
            max_abs_vs_reference=r["max_abs_vs_eager"],
            kept_freed_memory=bool(r["kept_freed_memory"]),
            psnr_vs_reference=_psnr_of(r),
            route_agreement=r["route_agreement"],
            skipped=r["skipped"],
        )
        for r in rows
    ]


def chart(results: list[BenchResult], path: Path) -> None:
    """Horizontal bars of median latency per case; beside each, the speed-up against eager and the
    accuracy it costs (PSNR against eager fp32, share of identical routes). Skipped cases are left out."""
    import cv2

    ups = speedups(results)
    ran = [r for r in results if r.times]
    row, left, width = 28, 380, 520
    img = np.full((row * len(ran) + 50, left + width + 260, 3), 255, np.uint8)
    worst = max(r.median_ms for r in ran)
    title = "median latency (ms), speed-up vs PyTorch eager fp32, PSNR vs its output / routes the same"
    cv2.putText(img, title, (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    for i, r in enumerate(ran):
        y = 40 + i * row
        colour = (150, 150, 150) if r.case.backend == REFERENCE else (200, 120, 40)
        cv2.putText(img, r.case.label, (10, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        bar = int(width * r.median_ms / worst)
        cv2.rectangle(img, (left, y + 4), (left + bar, y + row - 6), colour, -1)
        accuracy = ""
        if r.case.backend != REFERENCE and r.psnr_vs_reference is not None and r.route_agreement is not None:
            db = f"{r.psnr_vs_reference:.1f} dB" if r.psnr_vs_reference < 99 else "> 99 dB"
            accuracy = f"  {db} / {100 * r.route_agreement:.0f}%"
        label = f"{r.median_ms:.0f} ms  x{ups[r.case]:.2f}{accuracy}"
        cv2.putText(img, label, (left + bar + 6, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    write_chart(path, img, SIGNATURE)
