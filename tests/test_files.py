"""Atomic writes: the umask's permissions, names near the file-system limit, nothing left on failure."""

from __future__ import annotations

import os

import pytest

from moce.files import NAME_MAX, atomic_path, remove_stale_temporaries, sha256_file, write_bytes_atomic


def test_written_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


def test_a_name_at_the_limit_still_gets_a_temporary_name(tmp_path):
    target = tmp_path / ("n" * (NAME_MAX - 4) + ".png")
    write_bytes_atomic(target, b"png")
    assert target.read_bytes() == b"png" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_sha256_of_a_file(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    assert sha256_file(tmp_path / "a") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_restrictive_umask_is_followed_and_left_in_place(tmp_path):
    old = os.umask(0o027)
    try:
        write_bytes_atomic(tmp_path / "b.bin", b"x")
        assert os.umask(0o027) == 0o027  # reading the mask did not change it
    finally:
        os.umask(old)
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o640


def test_stale_temporaries_of_dead_writers_are_removed_and_nothing_else(tmp_path):
    import subprocess

    dead = subprocess.run(["true"]).returncode or subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "sub").mkdir()
    stale = [
        tmp_path / f".a.png.moce{dead.pid}.abcd1234.part",
        tmp_path / "sub" / f".b.png.moce{dead.pid}.zz_z9999.part",
    ]
    live = tmp_path / f".c.png.moce{os.getpid()}.abcd1234.part"  # this process still writes it
    others = [tmp_path / ".d.png.x.part", tmp_path / "e.part", tmp_path / "f.png"]
    for path in [*stale, live, *others]:
        path.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in [live, *others]) and not any(p.exists() for p in stale)


def test_temporaries_are_named_for_the_stale_pattern(tmp_path):
    with atomic_path(tmp_path / "x.png") as tmp:
        tmp.write_bytes(b"x")
        assert tmp.name.startswith(f".x.png.moce{os.getpid()}.") and tmp.name.endswith(".part")
