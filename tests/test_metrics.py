"""Colour metrics: CIEDE2000 against the test pairs of Sharma, Wu and Dalal (2005), saturation."""

from __future__ import annotations

import numpy as np
import pytest

from moce.metrics import ciede2000, mean_ciede2000, mean_saturation

# (L, a, b) pairs and their CIEDE2000 difference, from the paper's test data (Table 1).
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, -0.001, 2.49), (50.0, 0.0009, -2.49), 4.8045),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),
    ((50.0, 2.5, 0.0), (56.0, -27.0, -3.0), 31.9030),
    ((50.0, 2.5, 0.0), (58.0, 24.0, 15.0), 19.4535),
    ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_ciede2000_matches_the_published_test_pairs():
    lab1 = np.array([p[0] for p in SHARMA])
    lab2 = np.array([p[1] for p in SHARMA])
    expected = np.array([p[2] for p in SHARMA])
    np.testing.assert_allclose(ciede2000(lab1, lab2), expected, atol=1e-4)
    np.testing.assert_allclose(ciede2000(lab2, lab1), expected, atol=1e-4)  # symmetric


def test_mean_ciede2000_of_images():
    rng = np.random.default_rng(0)
    img = rng.random((16, 16, 3)).astype(np.float32)
    assert mean_ciede2000(img, img) == pytest.approx(0.0, abs=1e-6)
    grey = np.repeat(img.mean(2, keepdims=True), 3, axis=2)
    assert mean_ciede2000(grey, img) > 10  # greying random colours is far from just noticeable


def test_saturation_is_zero_for_grey_and_one_for_pure_colours():
    assert mean_saturation(np.full((4, 4, 3), 0.3, np.float32)) == 0.0
    assert mean_saturation(np.zeros((4, 4, 3), np.float32)) == 0.0  # black: no division by zero
    red = np.zeros((4, 4, 3), np.float32)
    red[..., 0] = 0.8
    assert mean_saturation(red) == pytest.approx(1.0)
    half = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 0.5), np.full((4, 4), 0.5)], -1)
    assert mean_saturation(half) == pytest.approx(0.5)
