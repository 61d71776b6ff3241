"""Bundled data (demo checkpoint, sample images) and degradation synthesis for training and evaluation."""
