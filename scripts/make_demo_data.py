"""Write the colour photos the demo model trains and is evaluated on, with their sources and licences.

Sources, all offline-reproducible (Debian packages through ``apt-get download`` + ``dpkg -x``, no
root needed; the two Python wheels from PyPI):

* training (``train``): the photographic wallpapers of Debian's ``plasma-workspace-wallpapers``
  (LGPL-3 per their metadata), scikit-learn's two sample photos (CC BY 2.0) and scikit-image's
  colour photos (public domain / CC0 / no known restrictions);
* ``train-wide``: those and the photos of ``lomiri-wallpapers-16.04`` / ``-20.04`` (Ubuntu's
  community photos, CC BY, CC BY-SA or CC0 per the package's copyright file);
* held out for the demo samples: scikit-image's ``chelsea`` and ``coffee``;
* independent evaluation: the twelve nature photos of Debian's ``mate-backgrounds`` (GPL-2+), a
  package nothing trains on;
* ``train-first``: the eleven scikit-image photos, mostly grey, that the model's first training
  stages used (kept so that the whole recipe in docs/MODEL_CARD.md can be rerun).

``ukui-wallpapers`` holds no photographs (every file is an illustration or a 3-D render), and
plasma's ``ColdRipple`` and ``Grey`` are black-and-white, and Lomiri's ``analogpattern``, ``umang``,
``Fossa``, ``Infinite-Sea`` and ``Painting-Colors`` are patterns or illustrations, so none of them is used.
Wallpapers are downscaled (area filter) to ``--long-side`` pixels, so that a training crop shows
about as much of a scene as it does on the scikit-image photos, and evaluation photos to
``--eval-long-side`` (600: the size of the held-out demo photos). ``manifest.json`` records each
file's source, original path, author and licence.

The output folder may be new, empty or this script's earlier output: a file there that its
``manifest.json`` does not list is never replaced; the run is refused, before any download, if it
would write one. Each file is written whole or not at all.

    pip install 'moce[data]'
    python scripts/make_demo_data.py build/photos
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from moce.files import write_bytes_atomic

PLASMA = "plasma-workspace-wallpapers"
WIDE = "train-wide"  # ``train`` and the Lomiri photos: stages 8-12 trained on ``train`` before these were added
MATE = "mate-backgrounds"
LOMIRI = {  # package -> photo -> (author, licence), from the package's copyright file
    "lomiri-wallpapers-16.04": {
        "Bridge_by_Sander_Klootwijk": ("Sander Klootwijk", "CC-BY-SA-4.0"),
        "Dragonfly_by_Bolly": ("Bolly", "CC-BY-SA-4.0"),
        "Picture_0B_by_freespace": ("Trevor Freespace", "CC-BY-4.0"),
        "Picture_1A_by_freespace": ("Trevor Freespace", "CC-BY-4.0"),
        "Wine_by_Jakkub_Mede": ("Jakub Mede", "CC-BY-4.0"),
        "aitzgorri_by_Aitzol_Berasategi": ("Aitzol Berasategi", "CC-BY-4.0"),
        "free_by_Peter_Nerlich": ("Peter Nerlich", "CC-BY-SA-4.0"),
        "friends_by_Aitzol_Berasategi": ("Aitzol Berasategi", "CC-BY-4.0"),
        "greentock_by_Peter_Nerlich": ("Peter Nerlich", "CC-BY-SA-4.0"),
        "life_by_Aitzol_Berasategi": ("Aitzol Berasategi", "CC-BY-4.0"),
        "picosdeeuropa_by_Aitzol_Berasategi": ("Aitzol Berasategi", "CC-BY-4.0"),
        "seeding_by_Clements_Engelhardt": ("Clemens Engelhardt", "CC0-1.0"),
        "sunset_by_Aitzol_Berasategi": ("Aitzol Berasategi", "CC-BY-4.0"),
    },
    "lomiri-wallpapers-20.04": {"Kleiber_by_Lukas_Baubkus": ("Lukas Baubkus", "CC-BY-SA-3.0")},
}
PLASMA_PHOTOS = (
    "Autumn BytheWater ColorfulCups DarkestHour EveningGlow FallenLeaf Kite OneStandsOut Path summer_1am"
).split()
MATE_EVAL = {  # file -> author, from the package's copyright file: every photo of its nature set
    "Aqua": "Charles Barbin",
    "Blinds": "Lennart Poettering, Andrea Cimitan",
    "Dune": "Marco Cogoni, Hylke Bons",
    "FreshFlower": "Jens Ansorg",
    "Garden": "Charles Barbin",
    "GreenMeadow": "Timothy Schellhase, Lapo Calamandrei",
    "LadyBird": "Charles Barbin",
    "RainDrops": "blackcombwhistler07",
    "Storm": "Sergey Nazarov",
    "TwoWings": "Charles Barbin, Hylke Bons",
    "Wood": "Jean-François Fortin Tam",
    "YellowFlower": "Charles Barbin",
}
SKIMAGE_TRAIN = {
    "astronaut": "public domain (NASA)",
    "rocket": "public domain (SpaceX)",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions",
    "retina": "CC0",
}
SKIMAGE_HELDOUT = {"chelsea": "CC0 (Stefan van der Walt)", "coffee": "CC0 (Rachel Michetti)"}
FIRST_TRAIN = {  # what the first seven stages trained on (docs/MODEL_CARD.md): mostly grey
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
SKLEARN = {"china": "CC BY 2.0 (danielbuechele, Flickr)", "flower": "CC BY 2.0 (vultilion, Flickr)"}


@dataclass
class Entry:
    file: str
    split: str
    source: str
    original: str
    licence: str
    author: str
    size: tuple[int, int]


def unpack(package: str, work: Path) -> tuple[Path, str]:
    """``apt-get download`` one package into ``work`` and extract it; returns the tree and the version."""
    subprocess.run(["apt-get", "download", "-q", package], cwd=work, check=True, capture_output=True)
    deb = next(work.glob(f"{package}_*.deb"))
    tree = work / package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True)
    return tree, version.stdout.strip()


def pixels(path: Path) -> int:
    """Pixel count from a KDE wallpaper's file name (``2560x1600.jpg``)."""
    width, height = path.stem.split("x")
    return int(width) * int(height)


def downscaled(image: np.ndarray, long_side: int) -> np.ndarray:
    scale = long_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def save(image_rgb: np.ndarray, path: Path) -> tuple[int, int]:
    ok, png = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path.name}")
    write_bytes_atomic(path, png.tobytes())
    return image_rgb.shape[0], image_rgb.shape[1]


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def plasma_photos(root: Path, work: Path, long_side: int) -> list[Entry]:
    tree, version = unpack(PLASMA, work)
    entries = []
    for name in PLASMA_PHOTOS:
        folder = tree / "usr/share/wallpapers" / name
        meta = json.loads((folder / "metadata.json").read_text())
        plugin = meta.get("KPlugin", meta)
        largest = max((folder / "contents/images").glob("*.jpg"), key=pixels)
        size = save(downscaled(read_rgb(largest), long_side), root / "train" / f"{name}.png")
        authors = ", ".join(a.get("Name", "") for a in plugin.get("Authors", []))
        original = str(largest.relative_to(tree))
        entries.append(
            Entry(f"train/{name}.png", "train", f"{PLASMA} {version}", original, plugin["License"], authors, size)
        )
    return entries


def lomiri_photos(root: Path, work: Path, long_side: int) -> list[Entry]:
    """Ubuntu's community photos, as Debian's Lomiri packages ship them (``train-wide`` only)."""
    entries = []
    for package, photos in LOMIRI.items():
        tree, version = unpack(package, work)
        for name, (author, licence) in photos.items():
            original = tree / "usr/share/backgrounds" / f"{name}.jpg"
            size = save(downscaled(read_rgb(original), long_side), root / WIDE / f"{name}.png")
            rel = str(original.relative_to(tree))
            entries.append(Entry(f"{WIDE}/{name}.png", WIDE, f"{package} {version}", rel, licence, author, size))
    return entries


def copied_into(entries: list[Entry], split: str, target: str, root: Path) -> list[Entry]:
    """The photos of ``split`` copied into ``target`` too, so one folder holds a whole training set."""
    copies = []
    for e in (e for e in entries if e.split == split):
        name = Path(e.file).name
        write_bytes_atomic(root / target / name, (root / e.file).read_bytes())
        copies.append(replace(e, file=f"{target}/{name}", split=target))
    return copies


def mate_photos(root: Path, work: Path, long_side: int) -> list[Entry]:
    """The independent evaluation photos (nothing trains on this package)."""
    tree, version = unpack(MATE, work)
    entries = []
    for name, author in MATE_EVAL.items():
        original = tree / "usr/share/backgrounds/mate/nature" / f"{name}.jpg"
        size = save(downscaled(read_rgb(original), long_side), root / "eval" / f"{name}.png")
        rel = str(original.relative_to(tree))
        entries.append(Entry(f"eval/{name}.png", "eval", f"{MATE} {version}", rel, "GPL-2+", author, size))
    return entries


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """8-bit RGB from a scikit-image sample (some are gray, float or RGBA)."""
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    image = image[..., :3]
    if image.dtype.kind == "f":
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image.astype(np.uint8)


def wheel_photos(root: Path) -> list[Entry]:
    import skimage
    import skimage.data
    import sklearn
    from sklearn.datasets import load_sample_image

    entries = []
    for split, names in (("train", SKIMAGE_TRAIN), ("heldout", SKIMAGE_HELDOUT), ("train-first", FIRST_TRAIN)):
        for name, licence in names.items():
            size = save(as_rgb8(getattr(skimage.data, name)()), root / split / f"{name}.png")
            source = f"scikit-image {skimage.__version__}"
            entries.append(Entry(f"{split}/{name}.png", split, source, f"skimage.data.{name}", licence, "", size))
    for name, licence in SKLEARN.items():
        size = save(load_sample_image(f"{name}.jpg"), root / "train" / f"{name}.png")
        source = f"scikit-learn {sklearn.__version__}"
        entries.append(Entry(f"train/{name}.png", "train", source, f"datasets/images/{name}.jpg", licence, "", size))
    return entries


def planned_files() -> list[str]:
    """Every file a run writes, relative to the output folder, known before any download."""
    train = [f"train/{n}.png" for n in (*PLASMA_PHOTOS, *SKIMAGE_TRAIN, *SKLEARN)]
    files = train + [f"{WIDE}/{n}.png" for photos in LOMIRI.values() for n in photos]
    files += [f"{WIDE}/{Path(f).name}" for f in train] + [f"eval/{n}.png" for n in MATE_EVAL]
    files += [f"heldout/{n}.png" for n in SKIMAGE_HELDOUT] + [f"train-first/{n}.png" for n in FIRST_TRAIN]
    return [*files, "manifest.json"]


def written_before(out: Path) -> set[str]:
    """The files an earlier run wrote into ``out``, as its ``manifest.json`` lists them (none if
    there is no manifest or it is not this script's)."""
    try:
        entries = json.loads((out / "manifest.json").read_text())
        return {"manifest.json"} | {e["file"] for e in entries if {"source", "licence"} <= e.keys()}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return set()


def collisions(out: Path, planned: list[str]) -> list[str]:
    """The planned files that exist in ``out`` and that no earlier run of this script wrote."""
    ours = written_before(out)
    return [f for f in planned if os.path.lexists(out / f) and f not in ours]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="build/photos", type=Path)
    parser.add_argument("--long-side", type=int, default=800, help="training wallpapers' long side after downscaling")
    parser.add_argument("--eval-long-side", type=int, default=600, help="evaluation photos' long side")
    args = parser.parse_args()
    taken = collisions(args.out, planned_files())
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        sys.exit(f"make_demo_data: {args.out / taken[0]}{more} exists and is not this script's; choose another folder")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        entries = plasma_photos(args.out, work, args.long_side) + lomiri_photos(args.out, work, args.long_side)
        entries += mate_photos(args.out, work, args.eval_long_side)
    entries += wheel_photos(args.out)
    entries += copied_into(entries, "train", WIDE, args.out)
    assert sorted(e.file for e in entries) == sorted(planned_files()[:-1]), "planned_files() is out of date"
    write_bytes_atomic(args.out / "manifest.json", (json.dumps([asdict(e) for e in entries], indent=1) + "\n").encode())
    counts = {s: sum(e.split == s for e in entries) for s in ("train", WIDE, "heldout", "eval", "train-first")}
    print(f"wrote {counts} photos and manifest.json under {args.out}")


if __name__ == "__main__":
    main()
