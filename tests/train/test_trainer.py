"""`moce train`: the objective trains routers too, checkpoints are released-format and resumable."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from moce.errors import InputError
from moce.model import load_checkpoint
from moce.train.objective import objective, training_forward
from moce.train.trainer import TrainOptions, build_model, train


def _photos(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"p{i}.png"), (rng.random((80, 96, 3)) * 255).astype(np.uint8))
    return folder


def _opts(tmp_path: Path, iterations: int = 4) -> TrainOptions:
    return TrainOptions(data=tmp_path / "photos", out=tmp_path / "run", dim=8, iterations=iterations, batch=2, crop=32,
                        save_every=2)


def test_objective_reaches_routers_and_experts(tmp_path):
    model = build_model(_opts(tmp_path)).train()
    x, y = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    loss, parts = objective(model, x, y)
    loss.backward()
    router = model.adapter(0).routing
    assert router.gate[2].weight.grad.abs().sum() > 0 and router.freq_gate.weight.grad.abs().sum() > 0
    assert parts["balance"] > 0
    out, balance, routes = training_forward(model, x)
    assert out.shape == x.shape and len(routes) == model.config.num_adapters


def test_training_writes_loadable_released_format_and_resumes(tmp_path):
    _photos(tmp_path / "photos")
    final = train(_opts(tmp_path))
    loaded = load_checkpoint(final)  # hyper-parameters cross-checked against the tensors
    assert loaded.config.dim == 8 and loaded.hyper_parameters["model"] == "MoCE_IR_moce"
    assert loaded.hyper_parameters["iterations"] == 4
    blob_steps = []
    train(_opts(tmp_path, iterations=6), on_step=lambda step, parts: blob_steps.append(step))
    assert blob_steps == [5, 6]  # resumed from last.ckpt at step 4


def test_init_starts_from_a_checkpoint_and_rejects_another_architecture(tmp_path):
    _photos(tmp_path / "photos")
    first = train(_opts(tmp_path, iterations=2))
    start = load_checkpoint(first).state_dict
    seen: list[torch.Tensor] = []
    opts = TrainOptions(data=tmp_path / "photos", out=tmp_path / "ft", dim=8, iterations=1, batch=2, crop=32,
                        init=first, lr=0.0)  # lr 0: weights stay the ones loaded
    loaded = load_checkpoint(train(opts, on_step=lambda step, parts: seen.append(step))).state_dict
    assert seen == [1] and all(torch.equal(start[k], loaded[k]) for k in start)
    wrong = TrainOptions(data=tmp_path / "photos", out=tmp_path / "bad", dim=16, iterations=1, init=first)
    with pytest.raises(InputError, match="--init checkpoint"):
        train(wrong)
