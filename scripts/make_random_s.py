"""Random-weight MoCE-IR-S (the paper's small config, from its key/shape manifest) for benchmarks;
MoCE-IR (the large config) with a second argument ``L``.

    python scripts/make_random_s.py build/moceir_S_random.safetensors [S|L]
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

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden"


def main(out: str, size: str = "S") -> None:
    torch.manual_seed(0)
    keys = json.loads((GOLDEN / f"moceir_{size}_manifest.json").read_text())["keys"]
    model = MoCEIR(derive_config({k: tuple(v) for k, v in keys.items()}))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, out)
    print(f"wrote {out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main(*sys.argv[1:3]) if len(sys.argv) > 1 else main("build/moceir_S_random.safetensors")
