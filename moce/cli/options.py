"""Every option value checked where it is parsed, before any work, by one parser per kind of value
shared by the commands that take it. A bad value is a ``typer.BadParameter``, which the command
line prints as one line and exit status 2 (:class:`moce.cli.main.OneLineErrors`).

Each parser carries ``invalid``: a value it refuses, which the tests give every option that uses
it (numbers are bounded with Typer's ``min``/``max`` instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer

from moce.apps.bench_tiling import parse_tilings
from moce.apps.cluster import check_address
from moce.apps.session_options import DEVICE
from moce.data.degrade import check_degradations
from moce.errors import InputError
from moce.imageio import DEFAULT_MAX_PIXELS, SUPPORTED
from moce.names import MIN_SIDE, PRECISIONS, ROUTING_MODES
from moce.runtime.backends import BACKEND_NAMES
from moce.videoio import ENCODERS

T = TypeVar("T")
Parser = Callable[[Any], T]

OPSETS = (17, 20)
"""The ONNX opsets moce exports and validates (both ends included)."""


def refusing(invalid: str) -> Callable[[Parser[T]], Parser[T]]:
    """Record on a parser one value it refuses (for the tests that try every option)."""

    def mark(parser: Parser[T]) -> Parser[T]:
        parser.invalid = invalid  # type: ignore[attr-defined]
        return parser

    return mark


def one_of(values: Sequence[str], what: str) -> Parser[str]:
    """A parser taking one of ``values``."""

    @refusing("bogus")
    def parse(text: Any) -> str:
        value = str(text).strip().lower()
        if value not in values:
            raise typer.BadParameter(f"unknown {what} {text!r}; choose from {', '.join(values)}")
        return value

    return parse


def list_of(values: Sequence[str], what: str) -> Parser[list[str]]:
    """A parser taking a comma-separated list of ``values``."""

    @refusing("bogus")
    def parse(text: Any) -> list[str]:
        items = [t.strip().lower() for t in str(text).split(",")]
        unknown = [t for t in items if t.split(":")[0] not in values]
        if unknown or not items:
            raise typer.BadParameter(f"unknown {what} {', '.join(unknown)!r}; choose from {', '.join(values)}")
        return items

    return parse


def checked_by(check: Callable[[str], None], invalid: str) -> Parser[str]:
    """A parser that runs a library check on the text (its one-line error becomes the option's)."""

    @refusing(invalid)
    def parse(text: Any) -> str:
        try:
            check(str(text))
        except InputError as exc:
            raise typer.BadParameter(str(exc)) from None
        return str(text)

    return parse


@refusing("fog")
def degradations(text: Any) -> tuple[str, ...]:
    """Degradation names, comma-separated (a name may repeat, to draw it more often)."""
    names = tuple(str(text).split(","))
    try:
        check_degradations(names)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None
    return names


cluster_address = checked_by(check_address, "ray:/x")


@refusing("gif")
def image_ext(text: Any) -> str:
    """``--ext``: an output format moce writes, with or without its dot."""
    value = str(text).strip().lower().lstrip(".")
    if f".{value}" not in SUPPORTED:
        raise typer.BadParameter(f"unknown format {text!r}; choose from {', '.join(s[1:] for s in SUPPORTED)}")
    return value


@refusing("tpu")
def device(text: Any) -> str:
    """``--device``: cpu, cuda or cuda:N."""
    value = str(text).strip().lower()
    if not DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{text!r}: give cpu, cuda or cuda:N")
    return value


backend = one_of(BACKEND_NAMES, "backend")
precision = one_of(PRECISIONS, "precision")
routing = one_of(ROUTING_MODES, "routing form")
routings = list_of(ROUTING_MODES, "routing form")
precisions = list_of(PRECISIONS, "precision")


@refusing("onnxruntime:int4")
def runner_specs(text: Any) -> list[str]:
    """``backend[:precision]`` items, comma-separated: each backend and precision one moce has."""
    items = [t.strip().lower() for t in str(text).split(",")]
    for item in items:
        name, _, kind = item.partition(":")
        if name not in BACKEND_NAMES or kind and kind not in PRECISIONS:
            raise typer.BadParameter(
                f"{item!r}: give backend[:precision] with a backend of {', '.join(BACKEND_NAMES)} "
                f"and a precision of {', '.join(PRECISIONS)}"
            )
    return items


@refusing("bogus")
def tilings(text: Any) -> list[str]:
    """``bench --tiling``: policies such as ``untiled,auto,512``."""
    try:
        return parse_tilings(str(text))
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None


@refusing("3")
def image_sizes(text: Any) -> tuple[tuple[int, int], ...]:
    """Image sizes: ``256`` (square) or ``256x192`` (height x width), comma-separated; each side a
    multiple of the network's stride, each size within the default ``--max-pixels``."""
    value = str(text).strip().lower()
    try:
        parts = [[int(v) for v in item.split("x")] for item in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give sizes like 256 or 256x192") from None
    for part in parts:
        if len(part) not in (1, 2) or min(part) < MIN_SIDE or any(v % MIN_SIDE for v in part):
            raise typer.BadParameter(f"{text!r}: each side is a multiple of {MIN_SIDE} from {MIN_SIDE} up")
        if part[0] * part[-1] > DEFAULT_MAX_PIXELS:
            raise typer.BadParameter(f"{text!r}: a size is at most {DEFAULT_MAX_PIXELS:,} pixels")
    return tuple((p[0], p[-1]) for p in parts)


@refusing("256,128")
def image_size(text: Any) -> tuple[int, int]:
    """One image size (:func:`image_sizes`, a single one)."""
    found = image_sizes(text)
    if len(found) != 1:
        raise typer.BadParameter(f"{text!r}: give one size, such as 256 or 256x192")
    return found[0]


@refusing("12")
def crop_side(text: Any) -> int:
    """A square crop's side: a multiple of the stride, at least twice it (the network needs 16)."""
    try:
        side = int(str(text).strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give a crop side such as 64") from None
    if side < 2 * MIN_SIDE or side % MIN_SIDE or side > 4096:
        raise typer.BadParameter(f"{side}: a crop side is a multiple of {MIN_SIDE} from {2 * MIN_SIDE} to 4096")
    return side


@refusing("0,1")
def counts(text: Any) -> tuple[int, ...]:
    """A comma-separated list of counts, each at least 1 (batch sizes, blocks, heads)."""
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give counts like 1,2") from None
    if min(values) < 1:
        raise typer.BadParameter(f"{text!r}: every count is at least 1")
    return tuple(values)


@refusing("lots")
def pixels(text: str | int) -> int:
    """A pixel count as people write it: ``64M``, ``64MP``, ``12.5M``, ``800k`` or ``1000000``."""
    if isinstance(text, int):
        return text
    value = str(text).strip().upper().removesuffix("P")
    scale = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}.get(value[-1:], 1)
    try:
        count = float(value[:-1] if scale > 1 else value) * scale
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a pixel count (say 64M, 800k or 1000000)") from None
    if count < MIN_SIDE * MIN_SIDE:
        raise typer.BadParameter(f"{text!r}: give at least {MIN_SIDE * MIN_SIDE} pixels, such as 64M")
    return int(count)


@refusing("7")
def tile_side(text: str | int) -> int | str:
    """``--tile``: ``auto`` (from the memory budget) or a side in pixels."""
    if str(text).strip().lower() == "auto":
        return "auto"
    if not str(text).strip().isdigit():
        raise typer.BadParameter(f"{text!r}: give auto or a tile side in pixels such as 512")
    return tile_pixels(text)


@refusing("auto")
def tile_pixels(text: str | int) -> int:
    """A tile side in pixels: a multiple of the stride, at least twice it."""
    try:
        side = int(str(text).strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give a tile side in pixels such as 512") from None
    if side < 2 * MIN_SIDE or side % MIN_SIDE:
        raise typer.BadParameter(f"{side}: a tile side is a multiple of {MIN_SIDE} from {2 * MIN_SIDE} up, such as 512")
    return side


@refusing("0")
def passes_count(text: str | int | None) -> int | None:
    """``--tile-passes``: ``auto`` (None: 1 with --tile auto, 3 with --tile N) or a count."""
    if text is None or isinstance(text, int):
        return text
    if str(text).strip().lower() == "auto":
        return None
    try:
        count = int(str(text).strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give auto or a number of passes such as 3") from None
    if not 1 <= count <= 16:
        raise typer.BadParameter(f"{count}: give from 1 to 16 passes, or auto")
    return count


MEMORY_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@refusing("-1G")
def memory_size(text: str | float | None) -> float | None:
    """A memory size as people write it: ``8G``, ``8GiB``, ``1.5G``, ``512M`` (binary units) or bytes."""
    if text is None or isinstance(text, float | int):
        return text
    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    scale = MEMORY_UNITS.get(value[-1:], 1)
    try:
        size = float(value[:-1] if scale > 1 else value) * scale
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a memory size (say 8G, 512M or 1.5G)") from None
    if size <= 0:
        raise typer.BadParameter(f"{text!r}: give a positive memory size such as 8G")
    return size


@refusing("bogus")
def video_codec(text: Any) -> str:
    """``--codec``: a codec moce names (h264, hevc, vp9, ffv1, av1) or an FFmpeg encoder (libx264, ...)."""
    value = str(text).strip().lower()
    if value not in ENCODERS and value not in ENCODERS.values():
        raise typer.BadParameter(f"unknown codec {text!r}; choose from {', '.join(ENCODERS)}")
    return value
