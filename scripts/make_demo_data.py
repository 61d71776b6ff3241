"""Write the photos the demo model trains and is evaluated on, from the scikit-image wheel.

Only public-domain / CC0 images are used (licences as stated in ``skimage.data``'s docstrings).
``chelsea`` and ``coffee`` are held out for evaluation and the README demo samples.

    python scripts/make_demo_data.py build/photos
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

TRAIN = {
    "astronaut": "public domain (NASA)",
    "rocket": "public domain (SpaceX)",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions",
    "retina": "CC0",
    "camera": "CC0 (Lav Varshney)",
    "brick": "CC0 (CC0Textures)",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures)",
    "coins": "no known copyright restrictions",
    "text": "public domain",
}
HELDOUT = {"chelsea": "CC0 (Stefan van der Walt)", "coffee": "CC0 (Rachel Michetti)"}


def write(folder: Path, names: dict[str, str]) -> None:
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, -1)
        image = image[..., :3]
        if image.dtype != np.uint8:
            image = (
                (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
                if image.dtype.kind == "f"
                else image.astype(np.uint8)
            )
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def main(out: str) -> None:
    root = Path(out)
    write(root / "train", TRAIN)
    write(root / "heldout", HELDOUT)
    print(f"wrote {len(TRAIN)} training and {len(HELDOUT)} held-out photos under {root}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/photos")
