"""The MoCE-IR network, its configuration, and safe checkpoint loading."""

from moce.model.checkpoint import LoadedCheckpoint, load_checkpoint, load_model, save_safetensors
from moce.model.config import MoCEConfig, derive_config
from moce.model.network import MoCEIR

__all__ = ["LoadedCheckpoint", "MoCEConfig", "MoCEIR", "derive_config", "load_checkpoint", "load_model", "save_safetensors"]
