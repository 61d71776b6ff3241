"""A seeded corpus of broken and unusual files through the real command: the run never dies, every
file is accounted for, and memory stays bounded."""

from __future__ import annotations

import json

import cv2

from moce.errors import one_line
from tests.apps.fuzz_corpus import make_corpus, run_moce_measured

PEAK_RSS_LIMIT_MB = 1500  # measured 319-376 MB with the tiny model (docs/performance.md)


def test_fuzzed_files_are_restored_or_reported_one_by_one(tmp_path, tiny_pkg):
    made = make_corpus(tmp_path / "in", 300, seed=1)
    out, report = tmp_path / "out", tmp_path / "r.json"
    args = ["restore", str(tmp_path / "in"), str(out), "-m", str(tiny_pkg.root), "--backend", "onnxruntime"]
    code, peak_mb = run_moce_measured([*args, "--report", str(report)])
    assert code == 1  # some files failed, none stopped the run
    assert peak_mb < PEAK_RSS_LIMIT_MB
    records = json.loads(report.read_text())["images"]
    by_name = {r["input"].rsplit("/", 1)[1]: r for r in records}
    assert sorted(by_name) == sorted(made) and len(records) == len(made)  # every file, once, by its exact name
    for name, kind in made.items():
        record = by_name[name]
        if kind == "intact":
            assert record["status"] == "ok", record["error"]
        if record["status"] == "ok":
            original = cv2.imread(str(tmp_path / "in" / name), cv2.IMREAD_UNCHANGED)
            restored = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
            assert restored is not None and restored.shape[:2] == original.shape[:2], name
        else:
            assert record["error"].startswith(one_line(str(tmp_path / "in" / name))) and "\n" not in record["error"]
    assert sorted(p.name for p in out.iterdir()) == sorted(n for n, r in by_name.items() if r["status"] == "ok")
    failed_kinds = {made[n] for n, r in by_name.items() if r["status"] == "error"}
    assert failed_kinds >= {"empty", "header", "non-finite"}
