"""One route per shot: the decision from a shot's first frames, and the cuts between shots."""

from __future__ import annotations

import numpy as np

from moce.apps.shots import MIN_SHOT, CutDetector, decide, route_changes

A, B, C = ((0,), (3,), (1,)), ((2,), (0,), (3,)), ((1,), (1,), (1,))


def test_a_shot_takes_the_route_most_of_its_frames_take_and_a_tie_keeps_the_last_shots():
    assert decide([A, B, B, A, B]) == B
    assert decide([A, B, C]) == A  # a tie without the previous route: the earliest
    assert decide([A, B, B, A], previous=A) == A and decide([A, B, B, A], previous=C) == A
    assert decide([B, A, A, B], previous=B) == B


def test_route_changes_count_consecutive_frames_that_differ():
    assert route_changes([A, A, B, B, A]) == 2 and route_changes([A]) == 0


def frame(value: int, rng: np.random.Generator) -> np.ndarray:
    """A small BGR frame: a scene (``value`` sets its colour) with a little noise."""
    base = np.zeros((36, 64, 3), np.float32)
    base[:, :32] = (value, 255 - value, value // 2)
    base[:, 32:] = (255 - value, value // 3, value)
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


def test_a_cut_is_seen_on_the_frame_that_starts_the_new_shot_and_a_flash_soon_after_is_not_another():
    rng = np.random.default_rng(0)
    scenes = [20] * 12 + [200] * 4 + [20] + [200] * 20  # a one-frame flash back, 4 frames into the second shot
    detector = CutDetector()
    cuts = [i for i, value in enumerate(scenes) if detector.is_cut(frame(value, rng))]
    assert cuts == [12] and MIN_SHOT > 5


def test_noise_alone_never_cuts():
    rng = np.random.default_rng(1)
    detector = CutDetector()
    assert not any(detector.is_cut(frame(90, rng)) for _ in range(40))
