"""Resolving packages: the cache key of an exported checkpoint and the exporter fingerprint."""

from __future__ import annotations

from moce.package import store


def test_the_cache_key_follows_the_version_and_the_exporter(tiny_ckpt, monkeypatch):
    first = store.cached_package_path(tiny_ckpt)
    monkeypatch.setattr("moce.package.store.__version__", "99.0")  # an upgrade exports again
    upgraded = store.cached_package_path(tiny_ckpt)
    monkeypatch.setattr("moce.package.store.exporter_fingerprint", lambda: "0123456789ab")  # so does changed code
    changed = store.cached_package_path(tiny_ckpt)
    assert len({first, upgraded, changed}) == 3 and first.parent == upgraded.parent == changed.parent


def test_the_exporter_fingerprint_follows_the_sources_and_the_graph_libraries(tmp_path, monkeypatch):
    def fingerprint() -> str:
        store.exporter_fingerprint.cache_clear()
        return store.exporter_fingerprint()

    first = fingerprint()
    for part in ("model", "export", "package"):
        (tmp_path / "moce" / part).mkdir(parents=True)
        (tmp_path / "moce" / part / "a.py").write_text("x = 1\n")
    (tmp_path / "moce" / "routing.py").write_text("y = 1\n")
    (tmp_path / "moce" / "names.py").write_text("z = 1\n")
    monkeypatch.setattr(store, "__file__", str(tmp_path / "moce" / "package" / "store.py"))
    copy = fingerprint()
    (tmp_path / "moce" / "export" / "a.py").write_text("x = 2\n")
    changed_source = fingerprint()
    monkeypatch.setattr(store, "installed_version", lambda name: "9.9" if name == "torch" else "1.0")
    changed_library = fingerprint()
    monkeypatch.undo()
    assert fingerprint() == first and len(first) == 12
    assert len({copy, changed_source, changed_library}) == 3
