"""Tile segments: their reported sums are the image's, and imposing them reproduces the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moce.model.global_stats import TileSegments
from moce.model.network import torch_groups
from moce.model.plan import SegmentStep
from moce.names import CORE_MASK, IMAGE, IMAGE_STATS, TILE_STATS, USE_IMAGE_STATS
from moce.routing import route


def _walk(model, image: torch.Tensor):
    """Yield (step, env) for every segment of an untiled run, env holding its inputs."""
    env = {IMAGE: image}
    with torch.inference_mode():
        for step in model.plan:
            if isinstance(step, SegmentStep):
                yield step, dict(env)
                env.update(model.run_segment(step.index, env))
            else:
                routing = route(env[step.logits].numpy(), model.config.top_k)
                env[step.output] = model.adapter(step.index).mix(
                    env[step.inputs[0]], env[step.inputs[1]], torch_groups(routing, image.device)
                )


def test_whole_image_tile_matches_the_segment_with_its_own_or_imposed_sums(tiny_model):
    image = torch.rand(2, 3, 64, 96)
    mask = torch.ones(2, 1, 64, 96)
    tiles = TileSegments(tiny_model)
    for step, env in _walk(tiny_model, image):
        with torch.inference_mode():
            want = tiny_model.run_segment(step.index, env)
            local = tiles.run(step.index, {**env, CORE_MASK: mask})
            imposed = tiles.run(
                step.index,
                {**env, CORE_MASK: mask, USE_IMAGE_STATS: torch.ones(1), IMAGE_STATS: local[TILE_STATS]},
            )
        for name in step.outputs:
            torch.testing.assert_close(local[name], want[name], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(imposed[name], want[name], atol=1e-5, rtol=1e-5)


def test_shares_of_two_halves_add_up_to_the_whole(tiny_model):
    """Reported sums are additive over disjoint cores: two half masks give the full mask's sums."""
    step, env = next(_walk(tiny_model, torch.rand(1, 3, 64, 96)))
    left, right = torch.zeros(1, 1, 64, 96), torch.zeros(1, 1, 64, 96)
    left[..., :48], right[..., 48:] = 1, 1
    tiles = TileSegments(tiny_model)
    with torch.inference_mode():
        whole = tiles.run(step.index, {**env, CORE_MASK: left + right})[TILE_STATS]
        halves = [tiles.run(step.index, {**env, CORE_MASK: m})[TILE_STATS] for m in (left, right)]
    # the halves' own sums drive their attention, so only the first reduction (the first
    # block's Gram matrix, computed before any attention) is comparable
    dim, heads = tiny_model.config.dim, tiny_model.config.heads[0]
    first = slice(0, heads * (dim // heads) ** 2)
    torch.testing.assert_close(halves[0][:, first] + halves[1][:, first], whole[:, first], atol=1e-3, rtol=1e-5)


def test_imposed_sums_change_what_a_tile_computes(tiny_model):
    """The imposed path is live: other sums give other outputs (a test that can fail)."""
    step, env = next(_walk(tiny_model, torch.rand(1, 3, 64, 64)))
    mask = torch.ones(1, 1, 64, 64)
    tiles = TileSegments(tiny_model)
    with torch.inference_mode():
        local = tiles.run(step.index, {**env, CORE_MASK: mask})
        other = tiles.run(
            step.index,
            {
                **env,
                CORE_MASK: mask,
                USE_IMAGE_STATS: torch.ones(1),
                IMAGE_STATS: local[TILE_STATS] * torch.rand_like(local[TILE_STATS]),
            },
        )
        unused = tiles.run(
            step.index,
            {**env, CORE_MASK: mask, USE_IMAGE_STATS: torch.zeros(1), IMAGE_STATS: torch.rand_like(local[TILE_STATS])},
        )
    name = step.outputs[-1]
    assert not torch.allclose(other[name], local[name], atol=1e-3)
    torch.testing.assert_close(unused[name], local[name])


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_tile_segments_agree_across_backends(tiny_pkg, tiny_model, backend):
    """ONNX tile graphs and the PyTorch tile path give the same pixels and the same sums."""
    from moce.runtime.executor import PlanExecutor, TileFeeds
    from moce.runtime.runners import OnnxRuntimeRunner, TorchRunner

    image = np.random.default_rng(1).random((2, 3, 64, 96), dtype=np.float32)
    mask = np.zeros((2, 1, 64, 96), np.float32)
    mask[:, :, :, 32:] = 1
    with torch.inference_mode():
        want, _ = tiny_model.restore(torch.from_numpy(image))
    runner = OnnxRuntimeRunner(tiny_pkg) if backend == "onnxruntime" else TorchRunner(tiny_model, "cpu")
    with runner:
        executor = PlanExecutor(tiny_pkg, runner)
        first = executor.run(image, "split", tiles=TileFeeds(mask))
        second = executor.run(image, "split", tiles=TileFeeds(mask, {s: t.sum(0) for s, t in first.tile_stats.items()}))
    assert set(first.tile_stats) == set(range(tiny_model.config.num_adapters + 1))
    assert np.isfinite(second.restored).all()
    assert np.abs(first.restored - want.numpy()).max() > 1e-3  # a core that is not the image gives other sums
    if backend == "torch":
        return
    with TorchRunner(tiny_model, "cpu") as runner:
        ref = PlanExecutor(tiny_pkg, runner).run(image, "split", tiles=TileFeeds(mask))
    np.testing.assert_allclose(first.restored, ref.restored, atol=1e-4)
    for s in ref.tile_stats:
        np.testing.assert_allclose(first.tile_stats[s], ref.tile_stats[s], rtol=1e-3, atol=1e-2)


def test_tile_segments_leave_the_model_as_it_was(tiny_model):
    """The tile forms live on a copy: the model keeps its classes, and a copy of a copy is the same."""
    classes = [type(m) for m in tiny_model.modules()]
    tiles = TileSegments(tiny_model)
    assert [type(m) for m in tiny_model.modules()] == classes
    assert not any(hasattr(m, "stats") for m in tiny_model.modules())
    again = TileSegments(tiles.model)
    assert [type(m) for m in again.model.modules() if not isinstance(m, type(tiles.stats))] == [
        type(m) for m in tiles.model.modules() if not isinstance(m, type(tiles.stats))
    ]
