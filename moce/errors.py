"""One exception family for everything a user can get wrong.

The CLI catches :class:`MoceError` and turns it into a one-line message and an exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` on one line: line breaks (in a file name, say) written as ``\\n``, not cut or kept."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def listed(items: list[str], limit: int) -> str:
    """The first ``limit`` of ``items`` joined by "; ", and how many more there are."""
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


class MoceError(Exception):
    """Base class of user-facing errors; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 2


class CheckpointError(MoceError):
    """A checkpoint file is missing, corrupt, unsafe or not MoCE-IR."""


class ConfigError(MoceError):
    """A configuration is inconsistent (with itself, a state dict or hyper-parameters)."""


class InputError(MoceError):
    """An input image or tensor cannot be processed (size, channels, format)."""


class ExportError(MoceError):
    """Writing an ONNX model package failed."""


class PackageError(MoceError):
    """A model package on disk is missing files or does not match its manifest."""


class ValidationError(MoceError):
    """Exported graphs disagree with PyTorch; ``failures`` lists every problem found."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = list(failures)
        head = f"validation failed with {len(self.failures)} problem(s)"
        super().__init__(head + ":\n  - " + "\n  - ".join(self.failures))


class MissingDependencyError(MoceError):
    """An optional library is not installed; the message names the extra to install."""
