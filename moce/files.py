"""Files written whole or not at all, and file hashes: one home for every writer in moce."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".part"
NAME_MAX = 255
_TEMP_NAME = re.compile(r"^\..*\.moce(\d+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")
"""``.NAME.moce<pid>.<8 random>.part``: what :func:`atomic_path` names its temporaries."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def umask() -> int:
    """The process's umask, read without setting it where Linux reports it (``os.umask`` can only
    be read by setting it, which would briefly change it for every thread of the process)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write to; renamed onto ``path`` when the block
    ends, removed if it raises. A crash leaves the old file or the complete new one, never a part.

    The file gets the umask's permissions (as ``open`` would give it, not mkstemp's 0600), and the
    temporary name stays within ``NAME_MAX`` however long ``path``'s name is.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f".moce{os.getpid()}."
    stem = path.name[: NAME_MAX - len(TEMP_SUFFIX) - len(tag) - 10]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}{tag}", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: Path, recursive: bool = True, name: str = "") -> list[Path]:
    """Delete the temporaries :func:`atomic_path` left in ``folder`` when its process was killed
    (their writer's pid is not running), only those for file ``name`` if one is given; files of any
    other name, and those of live writers, stay."""
    if not folder.is_dir():
        return []
    removed = []
    pattern = f".{glob.escape(name)}*{TEMP_SUFFIX}"
    for path in folder.rglob(pattern) if recursive else folder.glob(pattern):
        match = _TEMP_NAME.match(path.name)
        if match and path.is_file() and not path.is_symlink() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written whole or not at all (reports, ``--json`` outputs)."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())
