"""Lazy imports of heavy optional libraries, failing with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from moce.errors import MissingDependencyError


def require(module: str, install: str) -> ModuleType:
    """Import ``module`` or raise a :class:`MissingDependencyError` saying what to ``pip install``
    (a distribution, or ``moce[extra]``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"'{module}' is not installed ({exc}); install it with: pip install {install}"
        ) from exc
