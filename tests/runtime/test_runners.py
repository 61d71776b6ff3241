"""ONNX Runtime runner: the session options every plan session gets."""

from __future__ import annotations

import numpy as np

from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import ORT_SESSION_CONFIG, OnnxRuntimeRunner


def test_sessions_get_the_default_config_plus_the_callers_entries(tiny_pkg):
    extra = {"session.force_spinning_stop": "1"}
    image = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(tiny_pkg, threads=1, session_config=extra) as runner:
        PlanExecutor(tiny_pkg, runner).run(image, "split")
        sessions = list(runner._sessions.values())
    assert len(sessions) > 1
    for session in sessions:
        options = session.get_session_options()
        for key, value in {**ORT_SESSION_CONFIG, **extra}.items():
            assert options.get_session_config_entry(key) == value
    assert OnnxRuntimeRunner(tiny_pkg).session_config == dict(ORT_SESSION_CONFIG)
