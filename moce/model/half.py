"""The model in half precision (float16 or bfloat16) with float32 islands, for the PyTorch backend.

The islands are those the ONNX FP16 rewrite keeps in float32 (:mod:`moce.engines.precision`), for
the same reasons: layer norms, the attention scores and their softmax (sums over every pixel), the
experts' spectral mixing (values grow with the patch area), the frequency embedding and the routers
(which decide the routes). :func:`half_form` returns a copy (see :mod:`moce.model.rewrite`); the
model given stays float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moce.model.layers import ChannelAttention, ChannelLayerNorm, FFTAttention, FrequencyEmbedding
from moce.model.network import MoCEIR, Router
from moce.model.rewrite import Rewrite, rewritten

HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Float32Island(Rewrite):
    """The whole module in float32: inputs cast up, the output cast back to the first input's dtype."""

    def forward(self, x: Tensor, *rest: Tensor) -> Tensor:
        return super().forward(x.float(), *(t.float() for t in rest)).to(x.dtype)


class Float32Out(Rewrite):
    """The whole module in float32, its output left in float32 (the frequency embedding, which only
    routers read, and the routers, whose logits decide the routes)."""

    def forward(self, x: Tensor, *rest: Tensor) -> Tensor:
        return super().forward(x.float(), *(t.float() for t in rest))


class Float32Weights(Rewrite):
    """Attention weights (scores and softmax) in float32; they are applied to the values in half."""

    def weights(self, q: Tensor, k: Tensor) -> Tensor:
        return super().weights(q.float(), k.float()).to(q.dtype)


class HalfSpectralMix(Rewrite):
    """The spectral mixing computes in float32 (as the model's own does) and hands back half."""

    def mix_patches(self, q: Tensor, k: Tensor) -> Tensor:
        return super().mix_patches(q, k).to(q.dtype)


HALF_RULES = {
    ChannelLayerNorm: (Float32Island,),
    FrequencyEmbedding: (Float32Out,),
    Router: (Float32Out,),
    ChannelAttention: (Float32Weights,),
    FFTAttention: (HalfSpectralMix,),
}
FLOAT32_MODULES = (ChannelLayerNorm, FrequencyEmbedding, Router)


def half_form(model: MoCEIR, precision: str) -> MoCEIR:
    """A copy of ``model`` computing in ``precision`` ("fp16" or "bf16") outside the float32 islands."""
    copy = rewritten(model, HALF_RULES).to(HALF_DTYPES[precision])
    for module in copy.modules():
        if isinstance(module, FLOAT32_MODULES):
            module.float()
        if isinstance(module, ChannelAttention):
            module.temperature.data = module.temperature.data.float()
    return copy
