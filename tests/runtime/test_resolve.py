"""A checkpoint given as a model is validated before its export enters the cache."""

from __future__ import annotations

import pytest

from moce.errors import ValidationError
from moce.package import store
from moce.runtime import validate
from moce.runtime.resolve import open_model


def test_an_export_that_fails_validation_is_not_cached(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.setenv("MOCE_CACHE", str(tmp_path / "cache"))
    real = validate.validate_package

    def failing(*args, **kwargs):  # the real validation, with one failure planted
        report = real(*args, **kwargs)
        report.failures.append("planted failure")
        return report

    monkeypatch.setattr(validate, "validate_package", failing)
    with pytest.raises(ValidationError, match="planted failure"):
        open_model(tiny_ckpt)
    assert not store.cached_package_path(tiny_ckpt).exists()
    assert list((tmp_path / "cache" / "packages").iterdir()) == []  # no staging folder left either


def test_a_package_folder_is_taken_as_it_is(tiny_pkg, monkeypatch):
    monkeypatch.setattr(validate, "validate_package", None)  # would fail if called
    assert open_model(tiny_pkg.root).root == tiny_pkg.root
