"""A seeded corpus of broken and unusual files: the run never dies, and every file is accounted for."""

from __future__ import annotations

import cv2

from moce.apps.restore import RestoreJob, restore
from moce.errors import one_line
from tests.apps.fuzz_corpus import make_corpus


def test_fuzzed_files_are_restored_or_reported_one_by_one(tmp_path, tiny_pkg):
    made = make_corpus(tmp_path / "in", 300, seed=1)
    out = tmp_path / "out"
    summary = restore(
        RestoreJob(tmp_path / "in", out, model=tiny_pkg.root, backend="onnxruntime", report=tmp_path / "r.json")
    )
    by_name = {r.input.rsplit("/", 1)[1]: r for r in summary.records}
    assert sorted(by_name) == sorted(made)  # every file, once, under its exact name
    assert summary.exit_code == 1 and not summary.skipped
    for name, kind in made.items():
        record = by_name[name]
        if kind == "intact":
            assert record.status == "ok", record.error
        if record.status == "ok":
            original = cv2.imread(str(tmp_path / "in" / name), cv2.IMREAD_UNCHANGED)
            restored = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
            assert restored is not None and restored.shape[:2] == original.shape[:2], name
        else:
            assert record.error.startswith(one_line(str(tmp_path / "in" / name))) and "\n" not in record.error
    assert sorted(p.name for p in out.iterdir()) == sorted(n for n, r in by_name.items() if r.status == "ok")
    assert {k for k, r in ((made[n], by_name[n]) for n in made) if r.status == "error"} >= {
        "empty",
        "header",
        "non-finite",
    }
