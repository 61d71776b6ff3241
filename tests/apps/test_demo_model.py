"""The shipped demo weights restore real (held-out, CC0) photos: guards against shipping noise."""

from __future__ import annotations

import pytest

from moce.apps.evaluate import EvalOptions, evaluate
from moce.data import DEFAULT_MODEL, SAMPLES

DEMO = DEFAULT_MODEL


@pytest.fixture(scope="module")
def demo_eval(tmp_path_factory):
    options = EvalOptions(("noise25", "lowlight", "haze", "rain", "blur"), crops_per_image=6, crop=64, draws=1)
    return {r["degradation"]: r for r in evaluate(DEMO, SAMPLES / "clean", options).rows}


def test_demo_model_denoises_by_more_than_6_db(demo_eval):
    assert demo_eval["noise25"]["psnr_gain"] >= 6.0


@pytest.mark.parametrize("name", ["lowlight", "haze", "rain", "blur"])
def test_demo_model_gains_2_db_on_every_other_task(demo_eval, name):
    assert demo_eval[name]["psnr_gain"] >= 2.0


@pytest.mark.parametrize("name", ["noise25", "lowlight", "haze", "rain", "blur"])
def test_demo_model_keeps_colour(demo_eval, name):
    assert 0.8 <= demo_eval[name]["saturation_ratio"] <= 1.35  # restored saturation against the clean photo's
