"""Engine building, caching and staleness, against a test double of TensorRT (no GPU here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from moce.engines.build import BuildOptions, build
from moce.engines.tensorrt_builder import Profile, build_engines
from moce.errors import MissingDependencyError, PackageError
from moce.names import WHOLE_GRAPHS
from moce.package.manifest import load_manifest
from moce.runtime.tensorrt_runner import check_engines
from tests.engines.fake_tensorrt import FakeTensorRT

GPU = ("NVIDIA H100 80GB HBM3", "9.0")


@pytest.fixture()
def pkg(tmp_path, tiny_pkg):
    shutil.copytree(tiny_pkg.root, tmp_path / "p.moce")
    return load_manifest(tmp_path / "p.moce")


def test_one_strongly_typed_engine_per_split_graph_with_level_shaped_profiles(pkg, tmp_path):
    trt = FakeTensorRT()
    records = build_engines(
        pkg, "fp32", Profile((1, 64, 64), (2, 256, 128), (4, 512, 512)), 1 << 30, tmp_path / "cache", trt=trt, gpu=GPU
    )
    split = [n for n in pkg.graph_entries if n not in WHOLE_GRAPHS]
    assert sorted(r.graph for r in records) == sorted(split)
    assert len(trt.builds) == len(split) and all(b["strongly_typed"] and b["workspace"] == 1 << 30 for b in trt.builds)
    seg1 = next(b for b in trt.builds if b["source"].endswith("segment1.onnx"))["profiles"][0]
    # adapter 0 runs at level 2 (1/4 size), its skip input at level 1, freq_emb is [batch, 64]
    assert seg1["shortcut0"] == [[1, 32, 16, 16], [2, 32, 64, 32], [4, 32, 128, 128]]
    assert seg1["skip1"] == [[1, 16, 32, 32], [2, 16, 128, 64], [4, 16, 256, 256]]
    assert seg1["freq_emb"] == [[1, 64], [2, 64], [4, 64]]
    expert = next(b for b in trt.builds if b["source"].endswith("adapter2_expert1.onnx"))["profiles"][0]
    assert expert["gate"] == [[1, 1], [2, 1], [4, 1]]
    recorded = load_manifest(pkg.root)  # engines are recorded in the manifest, each file with its hash
    assert {e.gpu_name for e in recorded.engines} == {GPU[0]}
    assert sorted(e.graph for e in recorded.engines) == sorted(split)
    recorded.verify_files()
    engine = recorded.root / recorded.engines[0].file
    engine.write_bytes(engine.read_bytes() + b"x")
    with pytest.raises(PackageError, match="does not match the manifest"):
        recorded.verify_files()


def test_engine_cache_is_keyed_by_graph_precision_profile_version_and_gpu(pkg, tmp_path):
    cache = tmp_path / "cache"
    trt = FakeTensorRT()
    n = len([g for g in pkg.graph_entries if g not in WHOLE_GRAPHS])
    build_engines(pkg, "fp32", Profile(), 1 << 30, cache, trt=trt, gpu=GPU)
    build_engines(pkg, "fp32", Profile(), 1 << 30, cache, trt=trt, gpu=GPU)
    assert len(trt.builds) == n  # second run: all cached
    build_engines(pkg, "fp32", Profile(max=(8, 1024, 1024)), 1 << 30, cache, trt=trt, gpu=GPU)
    assert len(trt.builds) == 2 * n  # new profile: rebuilt
    build_engines(pkg, "fp32", Profile(), 1 << 30, cache, trt=trt, gpu=("NVIDIA H200", "9.0"))
    assert len(trt.builds) == 3 * n  # other GPU: rebuilt
    trt.__version__ = "11.0.0-fake"
    build_engines(pkg, "fp32", Profile(), 1 << 30, cache, trt=trt, gpu=GPU)
    assert len(trt.builds) == 4 * n  # other TensorRT: rebuilt
    assert len(list(cache.glob("timing-*.cache"))) == 3  # one timing cache per GPU and version


def test_stale_engines_are_refused_with_the_rebuild_command(pkg, tmp_path):
    build_engines(pkg, "fp32", Profile(), 1 << 30, tmp_path / "c", trt=FakeTensorRT(), gpu=GPU)
    assert len(check_engines(pkg, "fp32", FakeTensorRT.__version__, GPU)) > 0
    with pytest.raises(PackageError, match="built with TensorRT 10.99.0-fake, this is 11.0.0.*moce build-engine"):
        check_engines(pkg, "fp32", "11.0.0", GPU)
    with pytest.raises(PackageError, match="built for NVIDIA H100.*this is NVIDIA L4"):
        check_engines(pkg, "fp32", FakeTensorRT.__version__, ("NVIDIA L4", "8.9"))
    pkg.graph_entries["segment2"].sha256 = "0" * 64
    with pytest.raises(PackageError, match="segment2: its ONNX graph changed"):
        check_engines(pkg, "fp32", FakeTensorRT.__version__, GPU)
    with pytest.raises(PackageError, match="no fp16"):
        check_engines(pkg, "fp16", FakeTensorRT.__version__, GPU)


def test_parse_failures_are_reported(pkg, tmp_path):
    trt = FakeTensorRT()
    trt.fail_parse = True
    with pytest.raises(PackageError, match="could not parse it: fake parse error"):
        build_engines(pkg, "fp32", Profile(), 1 << 30, tmp_path / "c", trt=trt, gpu=GPU)


def test_without_tensorrt_the_onnx_variants_still_complete(pkg, monkeypatch):
    import moce.engines.tensorrt_builder as trt_module

    def missing():
        raise MissingDependencyError("TensorRT is not installed; pip install 'moce[trt]'")

    monkeypatch.setattr(trt_module, "import_tensorrt", missing)
    result = build(pkg.root, BuildOptions(precisions=["fp16"]))
    assert "moce[trt]" in result.tensorrt_error
    assert (pkg.root / "fp16" / "segment0.onnx").is_file()
    load_manifest(pkg.root).verify_files()


def test_a_killed_engine_cache_write_leaves_nothing_that_is_reused(pkg, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    trt = FakeTensorRT()
    real = Path.write_bytes

    def killed(path, data):  # the process dies halfway through writing an engine
        if path.name.endswith(".part") and ".engine." in path.name and not path.name.endswith(".json.part"):
            real(path, data[: len(data) // 2])
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        build_engines(pkg, "fp32", Profile(), 1 << 30, cache, trt=trt, gpu=GPU)
    monkeypatch.setattr(Path, "write_bytes", real)
    assert list(cache.glob("*.engine")) == [] and list(cache.glob("*.part")) == []
    built = len(trt.builds)
    build_engines(pkg, "fp32", Profile(), 1 << 30, cache, trt=trt, gpu=GPU)
    assert len(trt.builds) > built  # rebuilt, not taken from a half-written file
    load_manifest(pkg.root).verify_files()


def test_a_cached_engine_that_differs_from_its_record_is_rebuilt(pkg, tmp_path):
    cache = tmp_path / "cache"
    trt = FakeTensorRT()
    build_engines(pkg, "fp32", Profile(), 1 << 30, cache, trt=trt, gpu=GPU)
    built = len(trt.builds)
    victim = sorted(cache.glob("*.engine"))[0]
    victim.write_bytes(victim.read_bytes()[:-7])  # truncated behind moce's back
    build_engines(pkg, "fp32", Profile(), 1 << 30, cache, trt=trt, gpu=GPU)
    assert len(trt.builds) == built + 1  # that engine alone is built again
    recorded = load_manifest(pkg.root)
    recorded.verify_files()
    assert all((recorded.root / e.file).stat().st_size > 7 for e in recorded.engines)
