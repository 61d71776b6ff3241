"""`moce demo`: restore the bundled degraded samples with the bundled model and show the result.

Writes the restored images, the JSON report, a before/after sheet (degraded | restored | clean,
with PSNR) and a chart of which expert each degradation used in each adapter.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moce.apps.evaluate import route_usage, routing_chart
from moce.apps.job import RestoreJob
from moce.apps.report import RestoreSummary
from moce.apps.restore import restore
from moce.apps.session_options import SessionOptions
from moce.data import DEFAULT_MODEL, SAMPLES
from moce.imageio import read_image, write_chart
from moce.metrics import psnr
from moce.outputs import Planned, check_write, mark_folder
from moce.progress import Progress

SIGNATURE = "moce demo"
"""What the demo folder's marker, report and charts carry."""
NUM_EXPERTS = 4  # MoCE-IR's four complexity experts per adapter


@dataclass
class DemoResult:
    summary: RestoreSummary
    sheet: Path
    routing: Path
    psnr: dict[str, tuple[float, float]]  # sample -> (degraded, restored) PSNR against the clean photo


def _label(image: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    out = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
    cv2.rectangle(out, (0, 0), (out.shape[1], 20), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return out


def contact_sheet(
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path
) -> dict[str, tuple[float, float]]:
    """One row per sample: degraded, restored, clean, each labelled with its PSNR."""

    scores, lines = {}, []
    for name, degraded, restored, clean in rows:
        before, after = psnr(degraded, clean), psnr(np.clip(restored, 0, 1), clean)
        scores[name] = (before, after)
        lines.append(
            np.hstack(
                [
                    _label(degraded, f"{name}: {before:.1f} dB"),
                    _label(restored, f"restored: {after:.1f} dB"),
                    _label(clean, "clean"),
                ]
            )
        )
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    write_chart(path, np.vstack(lines), SIGNATURE)
    return scores


def run_demo(
    out: Path, model: str | Path | None = None, backend: str = "auto", progress: Progress | None = None
) -> DemoResult:
    check_write(Planned(Path(out), "-o/--output", SIGNATURE, folder=True), [model])
    Path(out).mkdir(parents=True, exist_ok=True)
    mark_folder(Path(out), SIGNATURE)
    restored_dir = out / "restored"
    summary = restore(
        RestoreJob(
            SAMPLES,
            restored_dir,
            model=model or DEFAULT_MODEL,
            session=SessionOptions(backend=backend),
            report=out / "report.json",
            overwrite=True,
        ),
        progress,
    )
    rows, usage = [], defaultdict(list)
    for record in summary.restored:
        source = Path(record.input)
        photo, _, degradation = source.stem.partition("_")
        clean = read_image(SAMPLES / "clean" / f"{photo}.png")[0]
        rows.append((source.stem, read_image(source)[0], read_image(Path(record.output))[0], clean))
        usage[degradation].append(record.routes)
    scores = contact_sheet(rows, out / "sheet.png")
    shares = {}
    for degradation, routes in sorted(usage.items()):
        top1 = [tuple(e if isinstance(e, int) else e[0] for e in route) for route in routes]
        shares[degradation] = route_usage(top1, len(top1[0]), NUM_EXPERTS).tolist()
    photos = len({Path(r.input).stem.partition("_")[0] for r in summary.restored})
    title = f"expert each degradation took per adapter ({photos} photos each)"
    routing_chart(shares, out / "routing.png", title, SIGNATURE)
    return DemoResult(summary, out / "sheet.png", out / "routing.png", scores)
