"""What a fixed unsharp mask gains on the blur inputs that `moce evaluate` scores, for scale.

    python scripts/blur_baseline.py build/photos/heldout [DRAWS]

Degrades every clean image exactly as `moce evaluate` does with its default degradation list
(same seeds, same draws), sharpens with ``x + amount * (x - gaussian(x, sigma))`` and prints the
PSNR gain of each setting, next to which the model's blur row in the model card can be read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from moce.data.degrade import degrade
from moce.engines.compare import psnr
from moce.evaluate import EvalOptions, draw_seed, load_clean_images

SETTINGS = [(amount, sigma) for amount in (0.5, 1.0, 2.0) for sigma in (1.0, 2.0)]


def unsharp(image: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """The classic sharpening filter, clamped to [0, 1] like the model's scored output."""
    return np.clip(image + amount * (image - cv2.GaussianBlur(image, (0, 0), sigma)), 0, 1)


def main(folder: str, draws: int = 8) -> None:
    options = EvalOptions()
    blur_index = options.degradations.index("blur")
    gains: dict[tuple[float, float], list[float]] = {s: [] for s in SETTINGS}
    for i, (_, clean) in enumerate(load_clean_images(Path(folder))):
        for k in range(draws):
            blurred = degrade(clean, "blur", seed=draw_seed(options.seed, k, i, blur_index))
            before = psnr(blurred, clean)
            for amount, sigma in SETTINGS:
                gains[amount, sigma].append(psnr(unsharp(blurred, amount, sigma), clean) - before)
    for (amount, sigma), values in gains.items():
        print(f"unsharp mask amount {amount:.1f} sigma {sigma:.1f}: blur gain {np.mean(values):+.2f} dB "
              f"({len(values)} inputs)")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
