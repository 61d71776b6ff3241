"""`moce bench --tiling`: the whole restore path at photo sizes, one tiling policy beside another.

At 2-12 megapixels the tiling policy, not the kernels, decides the time: how many pixels the
network runs (a tile's overlap runs twice), how many passes, and how much fresh memory the
first run pages in. Each case restores one photo, resized to the size, in a fresh child process
(its peak resident memory is the case's own, and no case inherits another's warm allocator), as
a user's single ``moce restore`` would: the set-up (loading the backend, measuring the memory
model) untimed, the restore timed once per round. Every case is scored against the first
policy listed (PSNR of the restored float images) and its time set beside every other's.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from moce._version import __version__
from moce.apps.memory import peak_resident
from moce.apps.session import Session
from moce.apps.session_options import SessionOptions
from moce.errors import InputError, MoceError
from moce.files import atomic_path
from moce.metrics import psnr
from moce.progress import Messages, quiet
from moce.runtime.allocator import freed_memory_kept, keep_freed_memory
from moce.runtime.resolve import open_model
from moce.runtime.tile_plan import AUTO

UNTILED = "untiled"
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "chelsea_noise25.png"
"""The photo restored when no ``--photo`` is given: a bundled noisy sample, resized to each size."""


@dataclass(frozen=True)
class TilingCase:
    """One policy at one size: ``tiling`` is ``auto``, ``untiled`` or a tile side."""

    tiling: str
    height: int
    width: int

    @property
    def label(self) -> str:
        return f"{self.height}x{self.width} {self.tiling}"


@dataclass
class TilingResult:
    case: TilingCase
    seconds: list[float]
    peak_bytes: float
    plan: dict[str, Any]
    psnr_vs_first: float | None = None
    speedups: dict[str, float] = field(default_factory=dict)  # other policy -> its time / this time

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


@dataclass(frozen=True)
class TilingBench:
    """What `moce bench --tiling` measures; ``tile_passes`` None: each policy's default."""

    tilings: list[str]
    sizes: list[tuple[int, int]]
    photo: Path | None = None
    session: SessionOptions = field(default_factory=SessionOptions)  # every case's, but its tiling
    rounds: int = 1


SIGNATURE = "moce bench --tiling"
"""What the JSON results carry under ``written_by``: a rerun may replace a file that has it, and no other."""


def tiling_json(results: list[TilingResult]) -> dict[str, Any]:
    """The results as JSON, signed as this command's."""
    cases = [
        {
            "size": [r.case.height, r.case.width],
            "tiling": r.case.tiling,
            "seconds": r.seconds,
            "median_s": r.median_s,
            "peak_bytes": r.peak_bytes,
            "plan": r.plan,
            "psnr_vs_first": r.psnr_vs_first,
            "speedup_vs": r.speedups,
        }
        for r in results
    ]
    return {"written_by": SIGNATURE, "moce": __version__, "cases": cases}


def parse_tilings(text: str) -> list[str]:
    """``auto,untiled,512``: each a policy, refused before any work when unknown."""
    tilings = [t.strip().lower() for t in text.split(",") if t.strip()]
    for t in tilings:
        if t not in (AUTO, UNTILED) and not (t.isdigit() and int(t) > 0):
            raise InputError(f"--tiling takes auto, untiled or a tile side such as 512, got {t}")
    if not tilings:
        raise InputError("--tiling takes a comma-separated list such as untiled,auto,512")
    return tilings


def session_options(tiling: str, height: int, width: int, bench: TilingBench) -> SessionOptions:
    """The session a case restores with: untiled is a tile larger than the image."""
    tile: int | str = AUTO if tiling == AUTO else int(tiling) if tiling != UNTILED else _covering(height, width)
    return replace(bench.session, tile=tile, max_pixels=max(height * width, 64))


def _covering(height: int, width: int) -> int:
    return -(-max(height, width) // 64) * 64


def run_tiling_bench(model: str | Path | None, bench: TilingBench, progress: Messages = quiet) -> list[TilingResult]:
    """Every policy at every size, each in a child process; then PSNR and speed against the others."""
    root = open_model(model, progress).root
    results: list[TilingResult] = []
    with tempfile.TemporaryDirectory(prefix="moce-bench-tiling-") as tmp:
        for height, width in bench.sizes:
            row: list[tuple[TilingResult, Path]] = []
            for tiling in bench.tilings:
                case = TilingCase(tiling, height, width)
                progress(f"restore {case.label}")
                out = Path(tmp) / f"{len(results) + len(row)}.npy"
                row.append((_run_child(root, case, bench, out), out))
            _compare(row)
            results += [r for r, _ in row]
    return results


def _compare(row: list[tuple[TilingResult, Path]]) -> None:
    first = np.load(row[0][1])
    for result, path in row:
        result.psnr_vs_first = psnr(np.clip(np.load(path), 0, 1), np.clip(first, 0, 1))
        result.speedups = {other.case.tiling: other.median_s / result.median_s for other, _ in row}


def _run_child(root: Path, case: TilingCase, bench: TilingBench, out: Path) -> TilingResult:
    spec = {
        "model": str(root),
        "case": asdict(case),
        "options": asdict(session_options(case.tiling, case.height, case.width, bench)),
        "photo": str(bench.photo) if bench.photo else None,
        "rounds": bench.rounds,
        "out": str(out),
        "keep_freed_memory": freed_memory_kept(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "moce.apps.bench_tiling", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise MoceError(f"bench case {case.label} failed: {detail}")
    data = json.loads(lines[-1])
    return TilingResult(case, data["seconds"], data["peak_bytes"], data["plan"])


def photo_at(photo: Path | None, height: int, width: int, session: Session) -> np.ndarray:
    """The photo (``--photo``, else the bundled sample) resized to ``height x width``, float RGB."""
    import cv2

    rgb, _ = session.read(photo or SAMPLE)
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["keep_freed_memory"]:
        keep_freed_memory()
    case = TilingCase(**spec["case"])
    with Session(open_model(spec["model"]), SessionOptions(**spec["options"])) as session:
        rgb = photo_at(Path(spec["photo"]) if spec["photo"] else None, case.height, case.width, session)
        plan = session.restorer.plan(rgb)  # measures the memory model (set-up, untimed) where it is not cached
        seconds = []
        for _ in range(spec["rounds"]):
            start = time.perf_counter()
            result = session.restore_rgb([rgb])[0]
            seconds.append(time.perf_counter() - start)
        peak = peak_resident()  # before the array is written out: that is not the restore's
        with atomic_path(Path(spec["out"])) as tmp, tmp.open("wb") as fh:
            np.save(fh, result.restored)
    return {"seconds": seconds, "peak_bytes": peak, "plan": plan.to_dict()}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
