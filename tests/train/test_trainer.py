"""`moce train`: the objective trains routers too, checkpoints are released-format and resumable."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from moce.errors import InputError
from moce.model import load_checkpoint
from moce.model.checkpoint import SAFE_GLOBALS
from moce.train.objective import (
    IDENTITY_ERROR,
    bucketed,
    colour_loss,
    fft_l1,
    objective,
    relative_fft_loss,
    relative_l1_loss,
    route_contrast_loss,
    saturation_loss,
    training_forward,
)
from moce.train.trainer import (
    TrainOptions,
    batch_stream,
    build_model,
    colour_jittered,
    lr_at,
    paled,
    progress,
    sample_batch,
    train,
)


def _photos(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"p{i}.png"), (rng.random((80, 96, 3)) * 255).astype(np.uint8))
    return folder


def _opts(tmp_path: Path, iterations: int = 4) -> TrainOptions:
    return TrainOptions(
        data=tmp_path / "photos", out=tmp_path / "run", dim=8, iterations=iterations, batch=2, crop=32, save_every=2
    )


def test_objective_reaches_routers_and_experts(tmp_path):
    model = build_model(_opts(tmp_path)).train()
    x, y = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    loss, parts = objective(model, x, y)
    loss.backward()
    router = model.adapter(0).routing
    assert router.gate[2].weight.grad.abs().sum() > 0 and router.freq_gate.weight.grad.abs().sum() > 0
    assert parts["balance"] > 0
    out, balance, routes, probs = training_forward(model, x)
    assert out.shape == x.shape and len(routes) == len(probs) == model.config.num_adapters


def test_route_contrast_scores_shared_routes_across_tasks():
    one_hot = lambda idx: torch.nn.functional.one_hot(torch.tensor(idx), 4).float()  # noqa: E731
    tasks = torch.tensor([0, 0, 1, 1])
    separated = [one_hot([0, 0, 1, 1]), one_hot([2, 2, 2, 2])]  # adapter 0 tells the tasks apart
    shared = [one_hot([0, 0, 0, 0]), one_hot([2, 2, 2, 2])]  # every crop takes one route
    scattered = [one_hot([0, 1, 2, 3]), one_hot([2, 2, 2, 2])]  # no two crops agree, even within a task
    assert route_contrast_loss(separated, tasks).item() < 1e-3
    assert route_contrast_loss(shared, tasks).item() > 5 and route_contrast_loss(scattered, tasks).item() > 2
    uniform = [torch.full((4, 4), 0.25)] * 2
    assert (
        route_contrast_loss(separated, tasks) < route_contrast_loss(uniform, tasks) < route_contrast_loss(shared, tasks)
    )
    assert route_contrast_loss(shared, torch.zeros(4, dtype=torch.long)).item() < 1e-3  # one task, one route: right
    assert route_contrast_loss([torch.ones(1, 4) / 4], torch.zeros(1, dtype=torch.long)).item() == 0.0  # no pairs


def test_route_weight_trains_routers_apart(tmp_path):
    torch.manual_seed(0)
    model = build_model(_opts(tmp_path)).train()
    x = torch.rand(4, 3, 32, 32)
    x[2:] = x[2:] * 0.1  # two visibly different "tasks"
    tasks = torch.tensor([0, 0, 1, 1])
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if "routing" in n], lr=5e-2)
    contrast = []  # the route contrast before each step, as the objective reports it
    for _ in range(40):
        loss, parts = objective(model, x, x, tasks=tasks, route_weight=1.0)
        contrast.append(parts["route"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert contrast[-1] < 0.5 * contrast[0]
    with pytest.raises(ValueError, match="task label"):
        objective(model, x, x, route_weight=1.0)


def test_training_writes_loadable_released_format_and_resumes(tmp_path):
    _photos(tmp_path / "photos")
    final = train(_opts(tmp_path))
    loaded = load_checkpoint(final)  # hyper-parameters cross-checked against the tensors
    assert loaded.config.dim == 8 and loaded.hyper_parameters["model"] == "MoCE_IR_moce"
    assert loaded.hyper_parameters["iterations"] == 4
    blob_steps, parts_seen = [], []
    opts = _opts(tmp_path, iterations=6)
    opts.route_weight, opts.relative_l1, opts.relative_fft = (
        0.1,
        True,
        True,
    )  # the options beyond the paper's objective, wired through
    final = train(opts, on_step=lambda step, parts: (blob_steps.append(step), parts_seen.append(parts)))
    assert blob_steps == [5, 6]  # resumed from last.ckpt at step 4
    assert all("route" in parts for parts in parts_seen)
    hyper = load_checkpoint(final).hyper_parameters
    assert hyper["route_loss_weight"] == 0.1 and hyper["relative_l1"] is True and hyper["relative_fft"] is True


def test_init_starts_from_a_checkpoint_and_rejects_another_architecture(tmp_path):
    _photos(tmp_path / "photos")
    first = train(_opts(tmp_path, iterations=2))
    start = load_checkpoint(first).state_dict
    seen: list[torch.Tensor] = []
    opts = TrainOptions(
        data=tmp_path / "photos", out=tmp_path / "ft", dim=8, iterations=1, batch=2, crop=32, init=first, lr=0.0
    )  # lr 0: weights stay the ones loaded
    loaded = load_checkpoint(train(opts, on_step=lambda step, parts: seen.append(step))).state_dict
    assert seen == [1] and all(torch.equal(start[k], loaded[k]) for k in start)
    wrong = TrainOptions(data=tmp_path / "photos", out=tmp_path / "bad", dim=16, iterations=1, init=first)
    with pytest.raises(InputError, match="--init checkpoint"):
        train(wrong)


def test_relative_l1_gives_mild_degradations_an_equal_say():
    clean = torch.zeros(2, 3, 8, 8)
    degraded = torch.stack([torch.full((3, 8, 8), 0.02), torch.full((3, 8, 8), 0.2)])  # blur-like, noise50-like
    halved = (degraded + clean) / 2  # both samples lose half their error
    per_sample_l1 = (halved - clean).abs().flatten(1).mean(1)
    assert torch.nn.functional.l1_loss(halved, clean).item() == pytest.approx(per_sample_l1.mean().item())
    # weights 1/0.02 and 1/0.2, normalised to average 1: sum(l * w) / sum(w)
    assert relative_l1_loss(halved, degraded, clean).item() == pytest.approx((0.01 * 50 + 0.1 * 5) / 55, rel=1e-5)
    only_mild_fixed = torch.stack([clean[0], degraded[1]])
    only_heavy_fixed = torch.stack([degraded[0], clean[1]])
    assert relative_l1_loss(only_mild_fixed, degraded, clean) == pytest.approx(
        relative_l1_loss(only_heavy_fixed, degraded, clean).item()
    )
    assert torch.nn.functional.l1_loss(only_mild_fixed, clean) > 5 * torch.nn.functional.l1_loss(
        only_heavy_fixed, clean
    )


def test_a_clean_sample_weighs_like_a_mild_degradation_not_like_the_whole_batch():
    clean = torch.zeros(2, 3, 8, 8)
    degraded = torch.stack([clean[0], torch.full((3, 8, 8), 0.2)])  # an identity sample, a noise50-like one
    changed = clean + 0.01  # the model changes both by 0.01
    weights = torch.tensor([1 / IDENTITY_ERROR, 1 / 0.2])
    expected = (0.01 * weights).sum() / weights.sum()
    assert relative_l1_loss(changed, degraded, clean).item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.isfinite(relative_fft_loss(changed, degraded, clean))


def test_relative_fft_gives_a_mild_degradation_the_say_of_a_heavy_one():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 16, 16, generator=gen)
    degraded = clean + torch.tensor([0.02, 0.2]).view(2, 1, 1, 1) * torch.randn(2, 3, 16, 16, generator=gen)
    only_mild_fixed = torch.stack([clean[0], degraded[1]])
    only_heavy_fixed = torch.stack([degraded[0], clean[1]])
    assert fft_l1(only_heavy_fixed, clean) < fft_l1(only_mild_fixed, clean) / 2  # plain FFT loss: noise dominates
    assert relative_fft_loss(only_mild_fixed, degraded, clean) == pytest.approx(
        relative_fft_loss(only_heavy_fixed, degraded, clean).item()
    )
    assert relative_fft_loss(clean, degraded, clean).item() == 0.0


def test_colour_loss_counts_colour_errors_and_not_luminance_errors():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 16, 16, generator=gen)
    grey = clean.mean(1, keepdim=True)
    greyed = grey + 0.5 * (clean - grey)  # half the saturation, luminance kept
    cast = clean + torch.tensor([0.05, 0.0, -0.05]).view(1, 3, 1, 1)  # a colour cast
    brighter = clean + 0.05  # no change of colour
    assert colour_loss(clean, clean).item() == 0.0
    l1 = torch.nn.functional.l1_loss
    assert colour_loss(greyed, clean) > l1(greyed, clean)  # its whole error is chroma, plus shifted channel means
    assert colour_loss(cast, clean).item() == pytest.approx(2 * 0.1 / 3, rel=1e-5)  # means + chroma
    assert colour_loss(brighter, clean).item() == pytest.approx(0.05, rel=1e-4)  # means only


def test_saturation_loss_asks_for_colourfulness_not_for_the_exact_colours():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 16, 16, generator=gen)
    grey = clean.mean(1, keepdim=True)
    greyed = grey + 0.5 * (clean - grey)
    swapped = clean[:, [2, 0, 1]]  # other hues, the same colourfulness
    assert saturation_loss(greyed, clean) > 0.1
    assert saturation_loss(swapped, clean).item() == pytest.approx(0.0, abs=1e-6)
    assert colour_loss(swapped, clean) > 0.1  # where the colour loss sees every hue


def test_colour_jitter_keeps_range_and_grey_and_changes_saturation():
    rng = np.random.default_rng(0)
    crop = rng.random((8, 8, 3)).astype(np.float32)
    jittered = [colour_jittered(crop, 0.2, np.random.default_rng(s)) for s in range(20)]
    assert all(j.dtype == np.float32 and j.min() >= 0 and j.max() <= 1 for j in jittered)
    spread = [np.std(j - j.mean(2, keepdims=True)) / np.std(crop - crop.mean(2, keepdims=True)) for j in jittered]
    assert 0.75 < min(spread) < 0.97 and 1.03 < max(spread) < 1.3
    grey = np.full((4, 4, 3), 0.5, np.float32)
    assert np.allclose(colour_jittered(grey, 0.2, rng).std(axis=2), 0, atol=0.06)  # only gains tint grey


def test_channel_shuffle_reorders_the_clean_crops_channels(tmp_path):
    image = np.zeros((32, 32, 3), np.float32)
    image[..., 1] = 0.8  # all green
    opts = TrainOptions(data=tmp_path, out=tmp_path, batch=12, crop=16, degradations=("blur",), channel_shuffle=True)
    _, clean, _ = sample_batch([image], opts, np.random.default_rng(0))
    dominant = {int(np.argmax(c.mean(axis=(1, 2)))) for c in clean}
    assert dominant == {0, 1, 2}  # green moved to red and blue too
    assert all(np.isclose(c.max(), 0.8) and np.isclose(c.sum(), 0.8 * 16 * 16) for c in clean)


def test_pale_crops_are_bright_and_flat_and_the_clean_target_is_the_pale_crop(tmp_path):
    photo = np.random.default_rng(1).random((32, 32, 3), dtype=np.float32) ** 2  # dark and contrasty
    pale = [paled(photo, np.random.default_rng(s)) for s in range(20)]
    assert all(p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1 for p in pale)
    assert min(p.min(axis=2).mean() for p in pale) > 0.35 > photo.min(axis=2).mean()  # dark channel lifted
    assert 0.2 < min(p.std() / photo.std() for p in pale) and max(p.std() / photo.std() for p in pale) < 0.75
    opts = TrainOptions(data=tmp_path, out=tmp_path, batch=40, crop=16, degradations=("clean",), pale=0.5)
    degraded, clean, _ = sample_batch([photo], opts, np.random.default_rng(0))
    np.testing.assert_array_equal(degraded, clean)  # a pale clean crop is its own target
    lifted = sum(c.min(axis=0).mean() > 0.35 for c in clean)
    assert 10 <= lifted <= 30  # about half of the crops
    unchanged = TrainOptions(data=tmp_path, out=tmp_path, batch=40, crop=16, degradations=("clean",))
    _, plain, _ = sample_batch([photo], unchanged, np.random.default_rng(0))
    assert all(c.min(axis=0).mean() < 0.35 for c in plain)


def test_batches_come_from_their_step_seed_in_the_loop_and_in_worker_processes(tmp_path):
    images = [np.random.default_rng(i).random((40, 48, 3), dtype=np.float32) for i in range(2)]
    opts = TrainOptions(data=tmp_path, out=tmp_path, iterations=5, batch=2, crop=16)
    inline = list(batch_stream(images, opts, first=0))
    opts.workers = 2
    parallel = list(batch_stream(images, opts, first=2))  # what a run resumed at step 2 sees
    assert len(inline) == 5 and len(parallel) == 3
    for a, b in zip(inline[2:], parallel):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2] == b[2]
    assert not np.array_equal(inline[0][0], inline[1][0])


def test_a_time_budget_runs_the_whole_schedule_and_stops(tmp_path):
    opts = TrainOptions(data=tmp_path, out=tmp_path, iterations=1000, lr=1.0, minutes=1.0)
    assert progress(10, 30.0, opts) == 0.5  # time, not steps, sets the pace
    assert (
        lr_at(0.0, opts) > 0 and lr_at(0.525, opts) == pytest.approx(0.505) and lr_at(1.0, opts) == pytest.approx(0.01)
    )
    _photos(tmp_path / "photos")
    run = _opts(tmp_path, iterations=10_000)
    run.minutes = 0.02  # 1.2 s
    steps: list[int] = []
    final = train(run, on_step=lambda step, parts: steps.append(step))
    assert 0 < steps[-1] < 10_000 and load_checkpoint(final).hyper_parameters["minutes"] == 0.02
    spent = _elapsed(run.out / "last.ckpt")
    assert spent >= 0.02 * 60
    run.minutes = (spent + 2.0) / 60  # resumed with 2 s more: it goes on from the time already spent
    more: list[int] = []
    train(run, on_step=lambda step, parts: more.append(step))
    assert more and more[0] == steps[-1] + 1 and _elapsed(run.out / "last.ckpt") >= spent + 2.0


def _elapsed(checkpoint: Path) -> float:
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return float(torch.load(checkpoint, weights_only=True)["elapsed_s"])


def test_padded_expert_sub_batches_change_neither_outputs_nor_gradients(tmp_path):
    assert bucketed(torch.tensor([5, 7, 9])).tolist() == [5, 7, 9, 5] and bucketed(torch.tensor([2])).tolist() == [2]
    model = build_model(_opts(tmp_path)).train()
    x = torch.rand(7, 3, 32, 32)  # 7 crops: every expert's sub-batch is padded unless it is 1, 2 or 4 long
    results = []
    for pad in (False, True):
        torch.manual_seed(0)  # the same routing noise
        model.zero_grad()
        out, balance, routes, _ = training_forward(model, x, pad_sub_batches=pad)
        (out.square().mean() + balance).backward()
        results.append(
            (
                out.detach(),
                [r.clone() for r in routes],
                [p.grad.clone() for p in model.parameters() if p.grad is not None],
            )
        )
    (out_a, routes_a, grads_a), (out_b, routes_b, grads_b) = results
    assert all(torch.equal(a, b) for a, b in zip(routes_a, routes_b))
    torch.testing.assert_close(out_a, out_b, atol=1e-6, rtol=0)
    assert len(grads_a) == len(grads_b) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_a, grads_b))
