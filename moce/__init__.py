"""moce: a deployment toolchain for MoCE-IR all-in-one image restoration.

The Python API::

    import moce

    with moce.open("model.moce", backend="auto", precision="fp32", tile="auto") as session:
        result = session.restore(image)  # H x W x C uint8/uint16/float32 RGB(A) array
        result.image, result.routes, result.seconds
        session.restore_file("in.jpg", "out/in.jpg")  # the bytes `moce restore` writes
        session.restore_video("in.mp4", "out/in.mp4")  # timing, sound and tags kept; a route per shot
        session.describe()  # backend, precision, routing, tiling, experts and their FLOPs
        moce.restore_folder(session, "photos/", "restored/", report="report.json")

Importing ``moce`` is light: PyTorch, ONNX Runtime and the rest load when a session needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from moce._version import __version__

if TYPE_CHECKING:
    from moce.apps.report import RestoreSummary
    from moce.apps.restore import restore_folder
    from moce.apps.session import RestoreResult, Session
    from moce.apps.session import open_session as open
    from moce.apps.session_options import SessionOptions
    from moce.errors import MoceError

__all__ = [
    "MoceError",
    "RestoreResult",
    "RestoreSummary",
    "Session",
    "SessionOptions",
    "VideoInterrupted",
    "VideoResult",
    "__version__",
    "open",
    "restore_folder",
]

_PUBLIC = {  # name -> (module, attribute), imported on first use (PEP 562)
    "open": ("moce.apps.session", "open_session"),
    "Session": ("moce.apps.session", "Session"),
    "SessionOptions": ("moce.apps.session_options", "SessionOptions"),
    "RestoreResult": ("moce.apps.session", "RestoreResult"),
    "restore_folder": ("moce.apps.restore", "restore_folder"),
    "RestoreSummary": ("moce.apps.report", "RestoreSummary"),
    "MoceError": ("moce.errors", "MoceError"),
    "VideoResult": ("moce.apps.video", "VideoResult"),
    "VideoInterrupted": ("moce.apps.video", "VideoInterrupted"),
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'moce' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
