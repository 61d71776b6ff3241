"""moce's Python API on the bundled demo model: an array, a file, a folder and a clip.

python examples/python_api.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

import moce
from moce.data import SAMPLE_CLIP, SAMPLES  # the bundled degraded photos, and a two-shot clip made of them


def main(out: Path, model: str | None = None) -> None:
    # model None: the bundled demo model. A package folder, a checkpoint or a MoCEIR module work alike.
    with moce.open(model, backend="auto", tile=512) as session:
        described = session.describe()
        print(f"backend {described['backend']} ({described['backend_reason']}), precision {described['precision']}")

        # 1. An array: H x W x C, RGB(A) order, uint8, uint16 or float32 in [0, 1]; the result keeps the type.
        rgb = np.ascontiguousarray(cv2.imread(str(SAMPLES / "coffee_rain.png"))[:, :, ::-1])
        result = session.restore(rgb)
        print(f"array: {result.image.shape} {result.image.dtype}, restored in {result.seconds:.2f} s")
        print(f"  experts per adapter: {[route[0] for route in result.routes]}")
        print(f"  expert compute skipped: {100 * result.expert_compute_skipped:.0f}%")

        # 2. A file: written as `moce restore` writes it (same depth, alpha, format), atomically.
        session.restore_file(SAMPLES / "chelsea_haze.png", out / "file" / "chelsea_haze.png", overwrite=True)

        # 3. A folder: every image on its own, a JSON report, outputs that exist are skipped (a rerun resumes).
        summary = moce.restore_folder(session, SAMPLES, out / "folder", report=out / "report.json")
        print(f"folder: {len(summary.restored)} restored, {len(summary.failed)} failed, exit code {summary.exit_code}")

        # 4. A clip: timing, sound, tags and rotation kept; one route per shot (route_per="frame" or "video").
        clip = session.restore_video(SAMPLE_CLIP, out / "clip" / SAMPLE_CLIP.name, overwrite=True)
        shots = ", ".join(f"frames {s.first}-{s.last}: {[r[0] for r in s.route]}" for s in clip.shots)
        print(f"clip: {clip.frames} frames, {clip.route_changes} route change(s); {shots}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/api"), sys.argv[2] if len(sys.argv) > 2 else None)
