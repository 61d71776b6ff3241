"""moce: a deployment toolchain for MoCE-IR all-in-one image restoration."""

__version__ = "0.6.1"
