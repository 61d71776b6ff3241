"""The MoCE-IR network, its configuration, and safe checkpoint loading.

Names are resolved lazily so that torch-free parts (``moce.model.config``, used by the runtime)
do not pull in PyTorch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LoadedCheckpoint": "moce.model.checkpoint",
    "load_checkpoint": "moce.model.checkpoint",
    "load_model": "moce.model.checkpoint",
    "save_safetensors": "moce.model.checkpoint",
    "MoCEConfig": "moce.model.config",
    "derive_config": "moce.model.config",
    "MoCEIR": "moce.model.network",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'moce.model' has no attribute {name!r}")
