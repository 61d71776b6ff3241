"""Bundled data: the demo checkpoint, the sample images; and degradation synthesis (``degrade``)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent
SAMPLES = DATA / "samples"
"""Degraded sample photos (``SAMPLES/clean`` holds their clean originals)."""
SAMPLE_CLIP = DATA / "sample_clip.mp4"
"""A two-shot clip (noisy, then hazy) made from the samples by ``scripts/make_sample_clip.py``."""
TINY_MODEL = DATA / "moceir_tiny.ckpt"
DEFAULT_MODEL = DATA / "moce_demo.ckpt" if (DATA / "moce_demo.ckpt").is_file() else TINY_MODEL
"""The trained demo model shipped with moce (see docs/MODEL_CARD.md); the golden tiny one before it exists."""
