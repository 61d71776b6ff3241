"""A checkpoint given as a model is validated before its export enters the cache."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from moce.cli.main import app
from moce.errors import PackageError, ValidationError
from moce.package import store
from moce.runtime import validate
from moce.runtime.resolve import ALLOW_INVALID, open_model


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


def test_a_package_that_failed_validation_is_refused_unless_allowed(tmp_path, tiny_pkg, monkeypatch):
    package = tmp_path / "p.moce"
    shutil.copytree(tiny_pkg.root, package)
    data = json.loads((package / "manifest.json").read_text())
    data["validation"] |= {"passed": False, "failures": ["planted failure", "another"]}
    (package / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(
        PackageError, match=r"failed validation when exported \(2 problem\(s\), first: planted failure\)"
    ):
        open_model(package)
    said: list[str] = []
    assert open_model(package, said.append, allow_invalid=True).root == package
    assert said and said[0].startswith("warning: ") and "used anyway" in said[0]
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((16, 16, 3), 90, np.uint8))
    monkeypatch.setenv(ALLOW_INVALID, "0")  # restored after the test: the flag below sets it for the process
    args = ["restore", str(photo), str(tmp_path / "out"), "-m", str(package), "--threads", "1"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "pass moce --allow-invalid-package" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    allowed = CliRunner().invoke(app, ["--allow-invalid-package", *args])
    assert allowed.exit_code == 0 and "used anyway" in allowed.output, allowed.output
