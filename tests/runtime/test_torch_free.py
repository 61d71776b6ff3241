"""A package runs through ONNX Runtime where PyTorch cannot be imported at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2
import numpy as np

BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"{name} is blocked: this process must run without PyTorch")
            return None

    sys.meta_path.insert(0, NoTorch())
""")


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_blocker_blocks():
    result = run_without_torch("import torch")
    assert result.returncode != 0 and "blocked" in result.stderr


def test_restore_through_onnx_runtime_needs_no_torch(tmp_path, tiny_pkg):
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    result = run_without_torch(f"""
        import sys
        from pathlib import Path
        from moce.apps.job import RestoreJob
        from moce.apps.restore import restore
        from moce.apps.session_options import SessionOptions

        summary = restore(RestoreJob(Path({str(tmp_path / "a.png")!r}), Path({str(tmp_path / "out")!r}),
                                     model=Path({str(tiny_pkg.root)!r}), session=SessionOptions(device="cpu")))
        assert summary.exit_code == 0, summary.to_dict()
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("restored without torch")
    """)
    assert result.returncode == 0, result.stderr
    assert "restored without torch" in result.stdout
    assert cv2.imread(str(tmp_path / "out" / "a.png")).shape == (40, 56, 3)
