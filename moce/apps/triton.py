"""Serving with NVIDIA Triton Inference Server: a model repository whose Python-backend model runs
moce's runtime on a package, and the server process started on it.

The repository holds one model (``moce`` by default): ``config.pbtxt`` (batching, instances,
the options below as parameters), ``1/model.py`` (a few lines that hand over to
:class:`TritonModel`) and ``1/package/`` (a verified copy of the model package). Inputs are
images ``[N, H, W, C]`` in RGB order, C = 1 (gray), 3 or 4 (RGBA: alpha passed through), as
``IMAGE`` (UINT8) or ``IMAGE_UINT16`` (UINT16), one of them per request; H and W vary between
requests. Outputs are ``RESTORED`` / ``RESTORED_UINT16`` in the input's type and layout, and
``ROUTES`` (INT32 ``[N, adapters, k]``: the experts each adapter ran). Images are converted with
moce's own image I/O, so a served image matches ``moce restore`` of the same PNG.

Tensors cross the Python backend through DLPack: the stubs bundled with ``nvidia-pytriton`` 0.7
are built against NumPy 1's ABI, and under NumPy 2 their ``as_numpy()`` reads zeros and
``Tensor(name, array)`` fails; DLPack works with either.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from moce.apps.session import Session
from moce.apps.session_options import SessionOptions
from moce.errors import InputError, MoceError, one_line
from moce.files import umask, write_bytes_atomic
from moce.imageio import ImageInfo, array_to_rgb, check_min_side, check_pixels, rgb_to_array
from moce.outputs import Planned, check_write, mark_folder
from moce.package.manifest import MANIFEST, Manifest, sha256_bytes
from moce.package.store import cache_dir
from moce.runtime.resolve import open_model

MODEL_NAME = "moce"
INPUTS = {"IMAGE": np.dtype(np.uint8), "IMAGE_UINT16": np.dtype(np.uint16)}
OUTPUTS = {"IMAGE": "RESTORED", "IMAGE_UINT16": "RESTORED_UINT16"}
ROUTES = "ROUTES"
TRITON_TYPES = {np.dtype(np.uint8): "TYPE_UINT8", np.dtype(np.uint16): "TYPE_UINT16"}
PACKAGE_DIR = "package"
INSTANCE_KINDS = ("cpu", "gpu")
SIGNATURE = "moce triton"
"""What a model folder's marker carries: ``moce triton`` replaces that folder only (:mod:`moce.outputs`)."""
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")

MODEL_PY = '''"""Triton Python-backend model written by `moce triton`: moce's runtime on ./package."""

import os
import site

# Where moce is installed, when the server's Python does not see it (`moce serve` sets this).
for _folder in os.environ.get("MOCE_PYTHONPATH", "").split(os.pathsep):
    if _folder:
        site.addsitedir(_folder)

import triton_python_backend_utils as pb_utils  # noqa: E402 - provided by the Python backend

from moce.apps.triton import TritonModel  # noqa: E402


class TritonPythonModel(TritonModel):
    pb = pb_utils
'''


SERVED = SessionOptions(tile=512, tile_passes=3)
"""A served model's session unless told otherwise: ``moce restore --tile 512``'s (fixed tiles, not
auto: instances share the machine, and a server wants its memory per request known)."""
SERVED_FIELDS = (
    "backend",
    "precision",
    "routing",
    "tile",
    "overlap",
    "route_per",
    "tile_passes",
    "threads",
    "max_pixels",
)
"""The session options a repository records in ``config.pbtxt`` (the device and the batch are the
instance's own)."""


@dataclass(frozen=True)
class ServeOptions:
    """How the served model runs: its session (:class:`SessionOptions`, the options of
    ``moce restore``) and Triton's own settings; written into ``config.pbtxt`` as parameters."""

    session: SessionOptions = SERVED
    max_batch_size: int = 8
    instances: int = 1
    instance_kind: str = "cpu"  # cpu or gpu (one instance per GPU, each on its own device)
    queue_delay_us: int = 2000  # how long the dynamic batcher waits to fill a batch

    def __post_init__(self) -> None:
        if self.instance_kind not in INSTANCE_KINDS:
            raise MoceError(f"--instance-kind must be one of {', '.join(INSTANCE_KINDS)}, got {self.instance_kind!r}")
        for name in ("max_batch_size", "instances"):
            if getattr(self, name) < 1:
                raise MoceError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def of(cls, **values: Any) -> ServeOptions:
        """Serve options from flat names, each a session option or one of Triton's."""
        own = {f.name for f in fields(cls)} - {"session"}
        session = replace(SERVED, **{k: v for k, v in values.items() if k not in own})
        return cls(session, **{k: v for k, v in values.items() if k in own})

    def session_options(self, device: str | None = None) -> SessionOptions:
        """The served model's session on ``device``, batches of up to ``max_batch_size`` images."""
        return replace(self.session, device=device, batch=self.max_batch_size)

    def parameters(self) -> dict[str, str]:
        """What ``config.pbtxt`` records, as the strings Triton hands back (None as "")."""
        flat = {name: getattr(self.session, name) for name in SERVED_FIELDS}
        flat |= {f.name: getattr(self, f.name) for f in fields(self) if f.name != "session"}
        return {k: "" if v is None else str(v) for k, v in flat.items()}

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> ServeOptions:
        """Read back what :func:`config_pbtxt` wrote (Triton hands parameters over as strings)."""
        values = {k: v["string_value"] for k, v in parameters.items() if isinstance(v, dict)}
        return cls.of(
            **{k: _typed(k, v) for k, v in values.items() if k in SERVED_FIELDS or k in cls.__dataclass_fields__}
        )


def _typed(name: str, text: str) -> Any:
    """A parameter's value back in its option's type: numbers, None for "", words as they are."""
    if text == "":
        return None
    return int(text) if text.lstrip("-").isdigit() and name not in ("backend", "precision", "routing") else text


# -- images in and out --------------------------------------------------------------------------


def decode_array(image: np.ndarray, label: str) -> tuple[np.ndarray, ImageInfo]:
    """An ``[H, W, C]`` RGB(A)/gray integer image as the float RGB the runtime restores, and how it
    was stored: the very conversion ``moce restore`` applies to a decoded file."""
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"{label}: expected [H, W, C] with C = 1, 3 or 4, got shape {list(image.shape)}")
    return array_to_rgb(image, label)


def encode_array(rgb: np.ndarray, info: ImageInfo) -> np.ndarray:
    """The restored float RGB back in the input's type and layout (``[H, W, C]``, RGB order)."""
    out = rgb_to_array(rgb, info)
    return out[:, :, None] if out.ndim == 2 else out


def check_batch(batch: np.ndarray, label: str, max_pixels: int) -> None:
    """Refuse, with one line naming the request, what the model cannot restore."""
    if batch.dtype not in TRITON_TYPES:
        raise InputError(f"{label}: sample type {batch.dtype} (UINT8 or UINT16 only)")
    if batch.ndim != 4 or batch.shape[3] not in (1, 3, 4):
        raise InputError(f"{label}: expected [N, H, W, C] with C = 1, 3 or 4, got shape {list(batch.shape)}")
    h, w = batch.shape[1:3]
    check_min_side(label, w, h)
    check_pixels(label, w, h, max_pixels)


@dataclass
class Restored:
    """One request's answer: images in the input's type and layout, and the routes per image."""

    images: np.ndarray  # [N, H, W, C]
    routes: np.ndarray  # int32 [N, adapters, k]


class ImageService:
    """The served model without Triton: integer image batches in, restored batches and routes out."""

    def __init__(self, manifest: Manifest, options: ServeOptions, device: str | None = None) -> None:
        self.session = Session(manifest, options.session_options(device))
        self.options = options
        self.routes_shape = (manifest.config.num_adapters, manifest.config.top_k)
        self.session.activate()

    def close(self) -> None:
        self.session.close()

    def restore(self, batches: list[tuple[np.ndarray, str]]) -> list[Restored | MoceError]:
        """Restore each ``(batch, label)``; a bad batch gets its error and the others still run.
        Untiled images of the same size and type are restored together, across batches."""
        answers: list[Restored | MoceError | None] = [None] * len(batches)
        decoded: dict[int, list[tuple[np.ndarray, ImageInfo]]] = {}
        for i, (batch, label) in enumerate(batches):
            try:
                check_batch(batch, label, self.options.session.max_pixels)
                decoded[i] = [decode_array(image, f"{label} image {k}") for k, image in enumerate(batch)]
            except MoceError as exc:
                answers[i] = exc
        keys = [(i, k) for i, images in decoded.items() for k in range(len(images))]
        results = dict(zip(keys, self.session.restore_rgb([decoded[i][k][0] for i, k in keys])))
        for i, images in decoded.items():
            try:
                done = [results[(i, k)] for k in range(len(images))]
                out = [encode_array(r.restored, info) for r, (_, info) in zip(done, images)]
                routes = np.array([r.routes for r in done], np.int32).reshape(len(done), *self.routes_shape)
                answers[i] = Restored(np.stack(out), routes)
            except MoceError as exc:
                answers[i] = exc
        return answers  # type: ignore[return-value] - every slot is filled above


# -- the Python backend ---------------------------------------------------------------------------


class TritonModel:
    """What the repository's ``model.py`` runs (Triton's ``TritonPythonModel`` interface).

    ``pb`` is ``triton_python_backend_utils``, set by ``model.py``; tests set a double of it.
    """

    pb: Any = None

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        options = ServeOptions.from_parameters(config.get("parameters", {}))
        root = Path(args["model_repository"]) / args["model_version"] / PACKAGE_DIR
        device = None
        if args.get("model_instance_kind") == "GPU":
            # Each instance runs in its own stub process: showing it only its GPU before any CUDA
            # library starts puts every backend (TensorRT, ONNX Runtime, PyTorch) on that GPU.
            os.environ["CUDA_VISIBLE_DEVICES"] = str(args.get("model_instance_device_id", "0"))
            device = "cuda"
        self.service = ImageService(open_model(root), options, device)

    def execute(self, requests: list[Any]) -> list[Any]:
        batches: list[tuple[np.ndarray, str]] = []
        outputs: list[str | MoceError] = []
        for n, request in enumerate(requests):
            label = f"request {request.request_id() or n}"
            given = {name: self.pb.get_input_tensor_by_name(request, name) for name in INPUTS}
            given = {name: tensor for name, tensor in given.items() if tensor is not None}
            output = _output_for(list(given), request.requested_output_names(), label)
            outputs.append(output)
            if isinstance(output, str):
                batches.append((np.from_dlpack(next(iter(given.values()))), label))
        answered = iter(self.service.restore(batches))
        return [self._response(next(answered) if isinstance(o, str) else o, o) for o in outputs]

    def _response(self, answer: Restored | MoceError, output: str | MoceError) -> Any:
        if isinstance(answer, MoceError):
            code = getattr(self.pb.TritonError, "INVALID_ARG", None)
            error = self.pb.TritonError(one_line(str(answer)), *([code] if code is not None else []))
            return self.pb.InferenceResponse(output_tensors=[], error=error)
        tensors = [
            self.pb.Tensor.from_dlpack(output, np.ascontiguousarray(answer.images)),
            self.pb.Tensor.from_dlpack(ROUTES, np.ascontiguousarray(answer.routes)),
        ]
        return self.pb.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        self.service.close()


def _output_for(inputs: list[str], requested: list[str], label: str) -> str | MoceError:
    """The image output answering a request with ``inputs``, or why the request cannot be answered."""
    if len(inputs) != 1:
        return InputError(f"{label}: send exactly one of the inputs {', '.join(INPUTS)}, not {len(inputs)}")
    output = OUTPUTS[inputs[0]]
    others = [name for name in requested if name in OUTPUTS.values() and name != output]
    if others and output not in requested:  # (no outputs named: Triton lists them all)
        return InputError(f"{label}: an {inputs[0]} request is answered in {output} and {ROUTES}, not {others[0]}")
    return output


# -- the repository -------------------------------------------------------------------------------


def config_pbtxt(manifest: Manifest, options: ServeOptions, name: str = MODEL_NAME) -> str:
    """The model's ``config.pbtxt``: variable-sized images, dynamic batching, instances, options."""
    adapters, k = manifest.config.num_adapters, manifest.config.top_k
    tensor = '    {{ name: "{}" data_type: {} dims: [ -1, -1, -1 ]{} }}'
    inputs = ",\n".join(tensor.format(n, TRITON_TYPES[t], " optional: true") for n, t in INPUTS.items())
    outputs = ",\n".join(tensor.format(OUTPUTS[n], TRITON_TYPES[t], "") for n, t in INPUTS.items())
    outputs += f',\n    {{ name: "{ROUTES}" data_type: TYPE_INT32 dims: [ {adapters}, {k} ] }}'
    kind = "KIND_GPU" if options.instance_kind == "gpu" else "KIND_CPU"
    params = ",\n".join(
        f'    {{ key: "{key}" value: {{ string_value: "{value}" }} }}' for key, value in options.parameters().items()
    )
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {options.max_batch_size}\n'
        f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {options.queue_delay_us} }}\n"
        f"instance_group [ {{ kind: {kind} count: {options.instances} }} ]\n"
        f"parameters [\n{params}\n]\n"
    )


def check_serving(manifest: Manifest, options: ServeOptions) -> None:
    """Open (and close) the session every served instance will open, so that a backend, precision or
    routing form the package cannot serve is refused here, before a repository is written or a
    server started, as ``moce restore`` refuses it before any image."""
    Session(manifest, options.session_options()).close()  # the device is the serving machine's: not checked here


def check_repository(out: Path, name: str, overwrite: bool, reads: list[Path | str | None]) -> None:
    """Refuse, before any work, a model folder ``out/name`` that would lose something: one moce did
    not write, one it did unless ``overwrite``, one on or in what the command reads, or a model
    name Triton would not take. Every other model and file in the repository is left alone."""
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise MoceError(f"--name {name!r}: a Triton model name is letters, digits, '-', '_' and '.' (not '.' first)")
    folder = Path(out) / name
    check_write(Planned(folder, "-o/--output with --name", SIGNATURE, folder=True), reads)
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise MoceError(f"{folder}: holds this model from an earlier `moce triton`; pass --overwrite to replace it")


def write_repository(
    model: str | Path | Manifest | None,
    out: Path,
    options: ServeOptions,
    name: str = MODEL_NAME,
    overwrite: bool = False,
) -> Path:
    """Write the model folder ``out/name`` of a Triton model repository serving ``model`` (a
    package, a checkpoint or an opened package); the repository may hold other models, which are
    left alone. The folder appears whole or not at all, and replaces an earlier one of moce's only
    with ``overwrite``. Returns the model's folder."""
    out = Path(out)
    check_repository(out, name, overwrite, [] if isinstance(model, Manifest) else [model])
    manifest = model if isinstance(model, Manifest) else open_model(model)
    check_serving(manifest, options)
    out.mkdir(parents=True, exist_ok=True)
    # Staged beside the repository, not in it: Triton polls every folder of a repository, hidden ones
    # included, and one it cannot load (a staging copy named otherwise) fails the whole server.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.resolve().name}.{name}.", dir=out.resolve().parent))
    try:
        (staging / "1").mkdir()
        _copy_package(manifest, staging / "1" / PACKAGE_DIR)
        write_bytes_atomic(staging / "config.pbtxt", config_pbtxt(manifest, options, name).encode())
        write_bytes_atomic(staging / "1" / "model.py", MODEL_PY.encode())
        mark_folder(staging, SIGNATURE)
        staging.chmod(0o777 & ~umask())  # a folder as mkdir makes it, not mkdtemp's 0700
        _replace_folder(staging, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / name


def _replace_folder(staging: Path, folder: Path) -> None:
    """Put ``staging`` at ``folder``. An earlier ``folder`` (moce's, as :func:`check_repository`
    made sure) is first moved into a fresh temporary folder beside ``staging`` and removed with it:
    nothing is deleted that this call did not create or move there."""
    aside = Path(tempfile.mkdtemp(prefix=f"{staging.name}.old.", dir=staging.parent))
    moved = aside / folder.name
    try:
        if folder.exists():
            folder.rename(moved)
        staging.rename(folder)
    except BaseException:
        if moved.exists() and not folder.exists():
            moved.rename(folder)  # the earlier folder back where it was
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _copy_package(manifest: Manifest, dest: Path) -> None:
    """The manifest and the files it names (already verified), nothing else from the folder."""
    dest.mkdir(parents=True)
    shutil.copy2(manifest.root / MANIFEST, dest / MANIFEST)
    for file in manifest.file_names():
        (dest / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(manifest.root / file, dest / file)


def repository_key(package: Path, options: ServeOptions) -> str:
    """What names a cached repository: the package's manifest and the options."""
    manifest_bytes = (Path(package) / MANIFEST).read_bytes()
    return sha256_bytes(manifest_bytes + json.dumps(options.parameters(), sort_keys=True).encode())[:16]


def cached_repository(manifest: Manifest, options: ServeOptions) -> Path:
    """A repository for an opened package under the cache, written once per package and options
    (the session it serves checked as it is written, or here when it was written before);
    returns the repository folder."""
    root = cache_dir() / "triton" / repository_key(manifest.root, options)
    if (root / MODEL_NAME / "config.pbtxt").is_file():
        check_serving(manifest, options)
    else:
        write_repository(manifest, root, options, overwrite=True)
    return root
