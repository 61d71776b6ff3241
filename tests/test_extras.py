"""Every extra installs cleanly with the rest: no two distributions in moce's requirement sets
provide the same top-level module (onnxruntime and onnxruntime-gpu both install `onnxruntime`)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"

KNOWN_MODULES = {
    # distributions that may not be installed here, with the top-level modules their wheels install
    "tensorrt": {"tensorrt"},
    "scikit-image": {"skimage"},
    "scikit-learn": {"sklearn"},
    "onnxruntime-gpu": {"onnxruntime"},
    "onnxruntime-directml": {"onnxruntime"},
    "opencv-python": {"cv2"},
    "opencv-contrib-python": {"cv2"},
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def requirement_sets(project: dict) -> dict[str, list[str]]:
    """Distribution names of the base install and of the base plus each extra, and of all together."""
    base = [_name(r) for r in project["dependencies"]]
    extras = {k: [_name(r) for r in v] for k, v in project.get("optional-dependencies", {}).items()}
    sets = {"base": base, **{f"base+{k}": base + v for k, v in extras.items()}}
    sets["all extras"] = base + [n for v in extras.values() for n in v]
    return sets


def top_level_modules(distribution: str) -> set[str]:
    """What ``distribution`` installs at the top level: from its installed record, else the table above."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        if distribution not in KNOWN_MODULES:
            raise AssertionError(f"{distribution}: not installed and not in KNOWN_MODULES; add it") from None
        return KNOWN_MODULES[distribution]
    top = (dist.read_text("top_level.txt") or "").split()
    if not top:
        parts = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith(("..", "/"))}
        top = [p.removesuffix(".py") for p in parts if not p.endswith((".dist-info", ".data", ".libs")) and p != "bin"]
    return {t for t in top if not t.startswith("_")} or {distribution.replace("-", "_")}


def clashes(names: list[str]) -> dict[str, list[str]]:
    """Top-level modules provided by more than one of ``names``."""
    owners: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        for module in top_level_modules(name):
            owners.setdefault(module, []).append(name)
    return {m: o for m, o in owners.items() if len(o) > 1}


@pytest.mark.parametrize("which", sorted(requirement_sets(tomllib.loads(PYPROJECT.read_text())["project"])))
def test_no_two_distributions_of_a_requirement_set_install_the_same_module(which):
    names = requirement_sets(tomllib.loads(PYPROJECT.read_text())["project"])[which]
    assert clashes(names) == {}


def test_the_check_finds_the_onnxruntime_clash():
    assert clashes(["onnxruntime", "onnxruntime-gpu", "numpy"]) == {"onnxruntime": ["onnxruntime", "onnxruntime-gpu"]}
