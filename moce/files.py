"""Files written whole or not at all, and file hashes: one home for every writer in moce."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".part"
NAME_MAX = 255


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
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
    stem = path.name[: NAME_MAX - len(TEMP_SUFFIX) - 12]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
