"""Restore a seeded corpus of broken and unusual files and report what happened.

    python scripts/fuzz_restore.py [COUNT] [--model PKG_OR_CKPT]

Builds COUNT files (default 1,000) with tests/apps/fuzz_corpus.py in a temporary folder, runs
`moce restore` on them in a child process (ONNX Runtime, the report on), and prints the files
tried, restored, failed and skipped, the files left unaccounted for, temporaries left behind,
the wall time and the child's peak RSS. Exits 1 if any file is unaccounted for, any valid image
failed, or a temporary remains.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.apps.fuzz_corpus import make_corpus, run_moce_measured  # noqa: E402 - the corpus generator lives with the tests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=1000)
    parser.add_argument("--model", default=str(ROOT / "moce" / "data" / "moceir_tiny.ckpt"))
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        made = make_corpus(Path(tmp) / "in", options.count, options.seed)
        report = Path(tmp) / "report.json"
        args = ["restore", f"{tmp}/in", f"{tmp}/out", "-m", options.model, "--backend", "onnxruntime"]
        start = time.perf_counter()
        code, peak_mb = run_moce_measured([*args, "--report", str(report)])
        seconds = time.perf_counter() - start
        records = {r["input"].rsplit("/", 1)[1]: r for r in json.loads(report.read_text())["images"]}
        left = sorted(p.name for p in Path(tmp, "out").rglob("*") if p.name.endswith(".part"))
    missing = sorted(set(made) - set(records))
    intact_failed = sorted(n for n, kind in made.items() if kind == "intact" and records[n]["status"] != "ok")
    counts = {s: sum(r["status"] == s for r in records.values()) for s in ("ok", "error", "skipped")}
    print(f"files tried: {len(made)}; restored {counts['ok']}, errors {counts['error']}, skipped {counts['skipped']}")
    print(f"exit code {code}; unaccounted {len(missing)}; valid images that failed {len(intact_failed)}")
    print(f"temporaries left: {len(left)}; wall {seconds:.1f} s; peak RSS {peak_mb:.0f} MB")
    return 1 if missing or intact_failed or left or code not in (0, 1) else 0


if __name__ == "__main__":
    sys.exit(main())
