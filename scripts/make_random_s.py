"""Random-weight MoCE-IR-S (the paper's small config, from its key/shape manifest) for benchmarks.

    python scripts/make_random_s.py build/moceir_S_random.safetensors
    moce export build/moceir_S_random.safetensors -o build/S.moce

Speed does not depend on the weights' values, only on the architecture; routes of random
weights are arbitrary, so expert savings measured with it are illustrative.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from moce.model.checkpoint import save_safetensors
from moce.model.config import derive_config
from moce.model.network import MoCEIR

MANIFEST = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden" / "moceir_S_manifest.json"


def main(out: str) -> None:
    torch.manual_seed(0)
    keys = json.loads(MANIFEST.read_text())["keys"]
    model = MoCEIR(derive_config({k: tuple(v) for k, v in keys.items()}))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, out)
    print(f"wrote {out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/moceir_S_random.safetensors")
