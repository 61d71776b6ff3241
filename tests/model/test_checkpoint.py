"""Checkpoints load from every supported format, and hostile or broken files are refused."""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import pytest
import torch

from moce.errors import CheckpointError
from moce.model import load_checkpoint, load_model, save_safetensors


class _RunsCodeOnLoad:
    """A pickle payload that would create ``marker`` if anything unpickled it for real."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_lightning_checkpoint_loads_with_its_hyper_parameters(tiny_ckpt):
    loaded = load_checkpoint(tiny_ckpt)
    assert loaded.hyper_parameters["model"] == "MoCE_IR_S"
    assert loaded.config.top_k == 1 and loaded.config.dim == 8
    assert len(loaded.sha256) == 64


@pytest.mark.parametrize("prefix", ["", "net.", "module."])
def test_plain_state_dicts_load_with_or_without_prefix(tmp_path, tiny_model, prefix):
    path = tmp_path / "weights.pth"
    torch.save({prefix + k: v for k, v in tiny_model.state_dict().items()}, path)
    model, _ = load_model(path)
    assert _same_weights(model, tiny_model)


def test_safetensors_round_trip(tmp_path, tiny_model):
    path = tmp_path / "weights.safetensors"
    save_safetensors(tiny_model, path)
    model, loaded = load_model(path)
    assert _same_weights(model, tiny_model) and loaded.config == tiny_model.config


@pytest.mark.parametrize("via", ["torch.save", "raw pickle"])
def test_code_in_a_pickle_never_runs(tmp_path, via):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"patch_embed.proj.weight": _RunsCodeOnLoad(marker)}}
    if via == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="refused to load") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # Control: the same payload really does run code when unpickled without restrictions.
    pickle.loads(pickle.dumps(payload["state_dict"]["patch_embed.proj.weight"]))
    assert marker.exists()


def test_refusal_names_the_global(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": _RunsCodeOnLoad(tmp_path / "m")}}, path)
    with pytest.raises(CheckpointError, match=r"'(posix|os)\.system'"):
        load_checkpoint(path)


def test_only_argparse_namespace_is_added_to_the_allow_list():
    from moce.model.checkpoint import SAFE_GLOBALS

    assert SAFE_GLOBALS == [argparse.Namespace]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such checkpoint file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, I am text\n"), "not a PyTorch checkpoint"),
        (
            lambda p: p.write_bytes(
                Path(__file__).parents[2].joinpath("moce/data/moceir_tiny.ckpt").read_bytes()[:50_000]
            ),
            "truncated or corrupt",
        ),
    ],
    ids=["missing", "empty", "text", "truncated"],
)
def test_broken_files_get_one_clear_line(tmp_path, make, message):
    path = tmp_path / "model.ckpt"
    make(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_broken_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(path)


def test_wrong_shape_and_extra_keys_are_named(tmp_path, tiny_model):
    state = dict(tiny_model.state_dict())
    state["refinement.layers.0.ffn.dwconv.weight"] = torch.zeros(5, 1, 3, 3)
    torch.save(state, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="refinement.layers.0.ffn.dwconv.weight"):
        load_checkpoint(tmp_path / "a.pt")
    state = dict(tiny_model.state_dict(), **{"extra.weight": torch.zeros(1)})
    torch.save(state, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        load_checkpoint(tmp_path / "b.pt")


def test_hyper_parameters_that_contradict_the_weights_are_refused(tmp_path, tiny_ckpt):
    with torch.serialization.safe_globals([argparse.Namespace]):
        blob = torch.load(tiny_ckpt, weights_only=True)
    blob["hyper_parameters"]["opt"].heads = [1, 1, 1, 1]
    torch.save(blob, tmp_path / "lying.ckpt")
    with pytest.raises(CheckpointError, match="'heads'"):
        load_checkpoint(tmp_path / "lying.ckpt")


def test_top_k_comes_from_hyper_parameters_and_can_be_overridden(tiny_ckpt):
    assert load_checkpoint(tiny_ckpt).config.top_k == 1
    assert load_checkpoint(tiny_ckpt, top_k=2).config.top_k == 2


def _tiny_blob(tiny_ckpt: Path) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(tiny_ckpt, weights_only=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: vars(b["hyper_parameters"]["opt"]).update(topk="two"), "hyper-parameter 'topk' is str 'two'"),
        (lambda b: vars(b["hyper_parameters"]["opt"]).update(topk=0), "hyper-parameter 'topk' is int 0"),
        (lambda b: b.update(hyper_parameters=[1, 2]), "'hyper_parameters' is a list, expected a mapping"),
        (lambda b: b.update(state_dict=[1, 2]), "'state_dict' is a list, expected a mapping"),
        (
            lambda b: vars(b["hyper_parameters"]["opt"]).update(dim="wide"),
            "hyper_parameters are incomplete or malformed",
        ),
        (
            lambda b: b.update(state_dict={"net.patch_embed.proj.weight": torch.zeros(3)}),
            "not a MoCE-IR checkpoint",
        ),
    ],
    ids=["topk-str", "topk-zero", "hparams-list", "state-list", "dim-str", "other-shapes"],
)
def test_metadata_of_the_wrong_type_is_one_line_naming_the_field(tmp_path, tiny_ckpt, change, message):
    blob = _tiny_blob(tiny_ckpt)
    change(blob)
    torch.save(blob, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(tmp_path / "odd.ckpt")
    assert str(tmp_path / "odd.ckpt") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("meta", "message"), [("{not json", "is not JSON"), ("[1, 2]", "is a JSON list")])
def test_safetensors_metadata_must_be_a_json_object(tmp_path, tiny_model, meta, message):
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in tiny_model.state_dict().items()},
        str(tmp_path / "m.safetensors"),
        {"moce.config": meta},
    )
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "m.safetensors")


def test_a_refused_pickle_opcode_is_named(tmp_path):
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"w": bytearray(b"xy")}, protocol=5))
    with pytest.raises(CheckpointError, match=r"plain.pt: refused to load: the pickle uses opcode FRAME \(149\)"):
        load_checkpoint(tmp_path / "plain.pt")
