"""`moce train` on CUDA (skipped without a GPU; both passed on an H200)."""

from __future__ import annotations

import pytest
import torch

from moce.model import load_checkpoint
from moce.train.objective import training_forward
from moce.train.trainer import build_model, train
from tests.train.test_trainer import _opts, _photos


@pytest.mark.gpu
def test_training_runs_on_cuda_with_worker_processes(tmp_path):
    _photos(tmp_path / "photos")
    opts = _opts(tmp_path, iterations=3)
    opts.device, opts.workers, opts.batch = "cuda", 2, 5
    steps: list[float] = []
    final = train(opts, on_step=lambda step, parts: steps.append(parts["loss"]))
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(steps)))
    assert load_checkpoint(final).config.dim == 8


@pytest.mark.gpu
def test_padded_expert_sub_batches_match_on_cuda(tmp_path):
    model = build_model(_opts(tmp_path)).cuda().train()
    x = torch.rand(7, 3, 32, 32, device="cuda")
    outs = []
    for pad in (False, True):
        torch.manual_seed(0)
        outs.append(training_forward(model, x, pad_sub_batches=pad)[0].detach())
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=0)  # cuDNN may pick other kernels per shape
