"""Make the bundled demo samples: held-out photos, downscaled, with each degradation applied.

    python scripts/make_demo_data.py build/photos
    python scripts/make_demo_samples.py build/photos/heldout moce/data/samples

Writes ``<photo>_<degradation>.png`` (degraded, what the demo restores) and ``clean/<photo>.png``
(the references the demo and `moce evaluate` compare against). Seeds are fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from moce.data.degrade import degrade
from moce.imageio import read_image

SAMPLE_DEGRADATIONS = ("noise25", "rain", "haze", "blur", "lowlight")
LONG_SIDE = 256


def main(src: str, dst: str) -> None:
    out = Path(dst)
    (out / "clean").mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(sorted(Path(src).glob("*.png"))):
        rgb, _ = read_image(photo)
        scale = LONG_SIDE / max(rgb.shape[:2])
        rgb = cv2.resize(
            rgb,
            (round(rgb.shape[1] * scale) // 8 * 8, round(rgb.shape[0] * scale) // 8 * 8),
            interpolation=cv2.INTER_AREA,
        )
        save = lambda path, img: cv2.imwrite(
            str(path),
            cv2.cvtColor(
                (np.clip(img, 0, 1) * 255).round().astype(np.uint8),  # noqa: E731
                cv2.COLOR_RGB2BGR,
            ),
        )
        save(out / "clean" / f"{photo.stem}.png", rgb)
        for j, name in enumerate(SAMPLE_DEGRADATIONS):
            save(out / f"{photo.stem}_{name}.png", degrade(rgb, name, seed=1000 * i + j))
    print(f"wrote samples to {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
