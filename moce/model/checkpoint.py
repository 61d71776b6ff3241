"""Safe loading of MoCE-IR checkpoints: Lightning ``.ckpt``, plain state dicts, safetensors.

Checkpoints are untrusted. Pickle-based files are read with ``torch.load(weights_only=True)``
plus exactly one extra allowed global, ``argparse.Namespace`` (released checkpoints keep their
training options in one); anything else is refused before any object in it is built.
"""

from __future__ import annotations

import argparse
import json
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moce.errors import CheckpointError, ConfigError
from moce.files import atomic_path, sha256_file
from moce.model.config import MoCEConfig, config_from_hyperparameters, cross_check, derive_config
from moce.model.network import MoCEIR

SAFE_GLOBALS: list[Any] = [argparse.Namespace]
"""The only globals beyond torch's own weights-only set that real MoCE-IR checkpoints need."""

KEY_PREFIXES = ("net.", "module.")
"""Prefixes stripped from keys: Lightning's ``net`` attribute and DataParallel's ``module``."""

SAFETENSORS_CONFIG_KEY = "moce.config"


@dataclass
class LoadedCheckpoint:
    """What a checkpoint file holds once validated: weights, config and provenance."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: MoCEConfig
    sha256: str
    hyper_parameters: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> MoCEIR:
        model = MoCEIR(self.config)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def _refusal(path: Path, exc: Exception) -> CheckpointError:
    """Explain why the weights-only unpickler stopped, naming the global when it says one."""
    text = str(exc)
    found = re.search(r"GLOBAL\s+([\w.]+)", text)
    if found:
        return CheckpointError(
            f"{path}: refused to load: the file needs the Python global '{found.group(1)}', which is not "
            "on the allow-list of tensors and plain containers (untrusted pickles can run code)"
        )
    opcode = re.search(r"Unsupported operand (\d+)", text)
    if opcode:
        name = {ord(op.code): op.name for op in pickletools.opcodes}.get(int(opcode.group(1)), "unknown")
        return CheckpointError(
            f"{path}: refused to load: the pickle uses opcode {name} ({opcode.group(1)}), which the weights-only "
            "reader does not accept (a file written by pickle.dump, not torch.save?)"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
    reason = (detail.group(1) if detail else text.splitlines()[0] if text else type(exc).__name__)[:160]
    return CheckpointError(f"{path}: refused to load: not a plain weights pickle ({reason.strip()})")


def _read_pickle(path: Path) -> Any:
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with path.open("rb") as fh:
            head = fh.read(4)
        if head[:2] == b"PK":
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint (damaged zip archive)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol chatter
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - a hostile or damaged file can raise anything
        if is_zip or isinstance(exc, EOFError):
            raise CheckpointError(
                f"{path}: truncated or corrupt checkpoint ({str(exc).splitlines()[0][:160]})"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint or safetensors file ({type(exc).__name__})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if SAFETENSORS_CONFIG_KEY not in meta:
        return tensors, {}
    try:
        hparams = json.loads(meta[SAFETENSORS_CONFIG_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata '{SAFETENSORS_CONFIG_KEY}' is not JSON ({exc.msg})") from None
    if not isinstance(hparams, dict):
        raise CheckpointError(
            f"{path}: metadata '{SAFETENSORS_CONFIG_KEY}' is a JSON {type(hparams).__name__}, expected an object"
        )
    return tensors, hparams


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for prefix in KEY_PREFIXES:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def _hyper_parameters(path: Path, blob: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten Lightning's ``hyper_parameters`` (possibly ``{'opt': Namespace}``) into a dict."""
    hp = blob.get("hyper_parameters") or {}
    if isinstance(hp, argparse.Namespace):
        hp = vars(hp)
    if not isinstance(hp, Mapping):
        raise CheckpointError(f"{path}: 'hyper_parameters' is a {type(hp).__name__}, expected a mapping")
    if isinstance(hp.get("opt"), argparse.Namespace):
        hp = {**{k: v for k, v in hp.items() if k != "opt"}, **vars(hp["opt"])}
    return dict(hp)


def _state_from_blob(path: Path, blob: Any) -> tuple[Mapping[str, Any], dict[str, Any]]:
    if not isinstance(blob, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict of tensors or a Lightning checkpoint, got {type(blob).__name__}"
        )
    if "state_dict" not in blob:
        return blob, {}
    if not isinstance(blob["state_dict"], Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(blob['state_dict']).__name__}, expected a mapping")
    return blob["state_dict"], _hyper_parameters(path, blob)


def _declared_top_k(path: Path, hparams: Mapping[str, Any]) -> int:
    """``topk`` (the original's name) or ``top_k`` of the hyper-parameters: a positive integer, default 1."""
    for name in ("topk", "top_k"):
        if name in hparams:
            value = hparams[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                kind = f"{type(value).__name__} {value!r:.40}"
                raise CheckpointError(f"{path}: hyper-parameter '{name}' is {kind}, expected a positive integer")
            return value
    return 1


def _check_tensors(path: Path, state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state-dict entry '{key}' is a {type(value).__name__}, not a tensor")
    return dict(state)


def _match_model(path: Path, config: MoCEConfig, state: Mapping[str, torch.Tensor]) -> None:
    """Name the first key that is missing, unexpected or of the wrong shape."""
    expected = {k: tuple(v.shape) for k, v in MoCEIR(config).state_dict().items()}
    for key, shape in expected.items():
        if key not in state:
            raise CheckpointError(f"{path}: not a MoCE-IR checkpoint: missing key '{key}'")
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{path}: key '{key}' has shape {tuple(state[key].shape)}, expected {shape} for the derived config"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: unexpected key '{extra[0]}' ({len(extra)} unexpected in all)")


def _declared_config(hparams: Mapping[str, Any]) -> MoCEConfig | None:
    """The config a checkpoint claims: ours (safetensors metadata) or the original's options."""
    if "expert_ranks" in hparams:
        return MoCEConfig.from_dict(hparams)
    if {"dim", "num_blocks", "num_dec_blocks", "heads", "num_refinement_blocks"} <= set(hparams):
        return config_from_hyperparameters(hparams)
    return None


IMAGE_MAGIC = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _image_kind(path: Path) -> str | None:
    """The image format ``path`` starts like (a photo given where a checkpoint goes), or None."""
    with path.open("rb") as fh:
        head = fh.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in IMAGE_MAGIC.items() if head.startswith(magic)), None)


def load_checkpoint(path: str | Path, top_k: int | None = None) -> LoadedCheckpoint:
    """Read, validate and describe a checkpoint without ever running code from it."""
    path = Path(path)
    if path.is_dir() and (path / "manifest.json").is_file():
        raise CheckpointError(f"{path}: is a model package (exported already), not a checkpoint")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    kind = None if path.suffix == ".safetensors" else _image_kind(path)  # its header length may read "BM"
    if kind:
        raise CheckpointError(f"{path}: is a {kind} image, not a checkpoint (.ckpt, .pt, .pth or .safetensors)")
    if path.suffix == ".safetensors":
        raw, hparams = _read_safetensors(path)
    else:
        raw, hparams = _state_from_blob(path, _read_pickle(path))
    state = _check_tensors(path, _strip_prefixes(raw))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    declared_k = _declared_top_k(path, hparams)
    try:
        config = derive_config({k: tuple(v.shape) for k, v in state.items()}, top_k=top_k or declared_k)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError) as exc:  # shapes of another network
        raise CheckpointError(
            f"{path}: not a MoCE-IR checkpoint: its tensor shapes do not derive one ({exc!r:.120})"
        ) from None
    try:
        declared = _declared_config(hparams)
        if declared is not None:
            cross_check(config, declared)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, IndexError, ValueError, TypeError) as exc:  # hyper-parameters of the wrong types
        raise CheckpointError(f"{path}: hyper-parameters do not describe a MoCE-IR config ({exc!r:.120})") from None
    _match_model(path, config, state)
    return LoadedCheckpoint(
        path=path, state_dict=state, config=config, sha256=sha256_file(path), hyper_parameters=hparams
    )


def load_model(path: str | Path, top_k: int | None = None) -> tuple[MoCEIR, LoadedCheckpoint]:
    loaded = load_checkpoint(path, top_k=top_k)
    return loaded.build_model(), loaded


def save_safetensors(model: MoCEIR, path: str | Path) -> None:
    """Write weights as safetensors with the config in the metadata (safe to share)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {SAFETENSORS_CONFIG_KEY: json.dumps(model.config.to_dict(), default=str)}
    with atomic_path(Path(path)) as tmp:  # whole or not at all, with the umask's mode like every package file
        save_file(state, str(tmp), metadata=metadata)
