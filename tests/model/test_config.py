"""Configs derived from state-dict shapes equal the published architectures."""

from __future__ import annotations

import pytest

from moce.errors import ConfigError
from moce.model import MoCEConfig, MoCEIR, derive_config
from moce.model.config import config_from_hyperparameters
from tests.conftest import manifest


def _shapes(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in manifest(name)["keys"].items()}


@pytest.mark.parametrize(("name", "params"), [("S", 11_477_752), ("L", 25_353_796), ("tiny", 295_302)])
def test_derived_config_builds_exactly_the_published_keys_and_shapes(name, params):
    config = derive_config(_shapes(name))
    published = config_from_hyperparameters(
        {
            **manifest(name)["config"],
            "latent_dim": manifest(name)["config"]["rank"],
            "num_exp_blocks": manifest(name)["config"]["num_experts"],
        }
    )
    assert config == published
    model = MoCEIR(config)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(state) == list(_shapes(name))
    assert state == _shapes(name)
    assert sum(p.numel() for p in model.parameters()) == params == manifest(name)["params"]


def test_s_and_l_derive_the_paper_numbers():
    s, large = derive_config(_shapes("S")), derive_config(_shapes("L"))
    assert (s.dim, large.dim) == (32, 48)
    assert s.num_blocks == (4, 6, 6, 8) and s.num_dec_blocks == (2, 4, 4) and s.num_refinement_blocks == 4
    assert s.heads == (1, 2, 4, 8) and s.num_experts == 4 and s.num_adapters == 10
    assert s.expert_ranks[0] == (4, 8, 16, 32)  # "spread" ranks: dim/8 .. dim


def test_missing_key_is_named():
    shapes = _shapes("tiny")
    del shapes["latent.layers.0.mixer.temperature"]
    with pytest.raises(ConfigError, match="latent.layers.0.mixer.temperature"):
        derive_config(shapes)


def test_config_round_trips_through_dict():
    config = derive_config(_shapes("S"))
    assert MoCEConfig.from_dict(config.to_dict()) == config


def test_inconsistent_config_is_rejected():
    with pytest.raises(ConfigError, match="heads"):
        MoCEConfig(heads=(1, 2))
    with pytest.raises(ConfigError, match="top_k"):
        MoCEConfig(top_k=5)
