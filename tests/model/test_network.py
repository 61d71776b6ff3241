"""The network reproduces the original implementation's golden outputs and routes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moce.errors import InputError
from moce.model import MoCEIR


def _routes(routings) -> np.ndarray:
    return np.stack([r.experts[:, 0] for r in routings], axis=1)


@pytest.mark.parametrize("index", range(4))
def test_each_golden_sample_alone(tiny_model, golden_io, index):
    x = torch.from_numpy(golden_io["input"][index : index + 1])
    out, routings = tiny_model.restore(x)
    np.testing.assert_allclose(out.numpy(), golden_io["output"][index : index + 1], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(_routes(routings), golden_io["routes"][index : index + 1])


def test_golden_batch_of_four(tiny_model, golden_io):
    out, routings = tiny_model.restore(torch.from_numpy(golden_io["input"]))
    np.testing.assert_allclose(out.numpy(), golden_io["output"], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(_routes(routings), golden_io["routes"])


def test_batch_runs_each_chosen_expert_once_and_never_an_unchosen_one(tiny_model, golden_io):
    calls: dict[tuple[int, int], list[int]] = {}
    hooks = []
    for a in range(tiny_model.config.num_adapters):
        for e in range(tiny_model.config.num_experts):
            expert = tiny_model.adapter(a).expert(e)
            hooks.append(
                expert.register_forward_hook(
                    lambda mod, inp, out, key=(a, e): calls.setdefault(key, []).append(inp[0].shape[0])
                )
            )
    try:
        tiny_model.restore(torch.from_numpy(golden_io["input"]))
    finally:
        for h in hooks:
            h.remove()
    expected: dict[tuple[int, int], list[int]] = {}
    for a, column in enumerate(golden_io["routes"].T):
        for e in np.unique(column):
            expected[(a, int(e))] = [int((column == e).sum())]
    assert calls == expected


def test_output_of_a_sample_does_not_depend_on_its_batch(tiny_model, golden_io):
    x = torch.from_numpy(golden_io["input"])
    alone = tiny_model(x[2:3])
    mixed = tiny_model(torch.cat([x[0:1], x[2:3], x[0:1]]))
    torch.testing.assert_close(mixed[1:2], alone, atol=1e-5, rtol=0)


def test_no_randomness_at_inference(tiny_model, golden_io):
    x = torch.from_numpy(golden_io["input"][:2])
    torch.manual_seed(0)
    first = tiny_model(x)
    torch.manual_seed(123)
    assert torch.equal(first, tiny_model(x))


@pytest.mark.parametrize("size", [(64, 96), (37, 53), (8, 8), (100, 9)])
def test_any_size_is_padded_and_cropped_back(tiny_model, size):
    x = torch.rand(1, 3, *size)
    out = tiny_model(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_padding_matches_running_on_the_reflect_padded_image(tiny_model):
    x = torch.rand(1, 3, 61, 90)
    padded = torch.nn.functional.pad(x, (0, 6, 0, 3), mode="reflect")
    torch.testing.assert_close(tiny_model(x), tiny_model(padded)[:, :, :61, :90])


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1, 32, 32), "3-channel"),
        ((1, 4, 32, 32), "3-channel"),
        ((1, 3, 7, 32), "at least 8"),
        ((3, 32, 32), "[N, C, H, W]"),
    ],
)
def test_bad_inputs_get_clear_errors(tiny_model, shape, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tiny_model(torch.rand(*shape))


def test_top_k_two_mixes_two_experts_with_their_gates(tiny_model, golden_io):
    from dataclasses import replace

    model = MoCEIR(replace(tiny_model.config, top_k=2))
    model.load_state_dict(tiny_model.state_dict())
    out, routings = model.restore(torch.from_numpy(golden_io["input"][:2]))
    assert all(r.experts.shape == (2, 2) for r in routings)
    assert all(np.all(r.experts[:, 0] != r.experts[:, 1]) for r in routings)
    assert not torch.allclose(out, tiny_model(torch.from_numpy(golden_io["input"][:2])))


def test_torch_compile_of_the_whole_model_equals_eager_with_the_same_routes(tiny_model, monkeypatch):
    """As users call it: ``torch.compile(model)``; the host-side routing decision is a graph break."""
    from moce.model import network

    decided: list[np.ndarray] = []
    real = network.route
    monkeypatch.setattr(network, "route", lambda logits, k: decided.append((r := real(logits, k)).experts) or r)
    image = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eager = tiny_model(image)
        eager_routes, decided[:] = list(decided), []
        torch._dynamo.reset()
        compiled = torch.compile(tiny_model)(image)
    assert (compiled - eager).abs().max().item() < 1e-4
    assert len(decided) == len(eager_routes) and all(np.array_equal(a, b) for a, b in zip(decided, eager_routes))
