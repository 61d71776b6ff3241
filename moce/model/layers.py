"""Building blocks of MoCE-IR (Restormer-style transformer blocks and the FFT expert body).

Module and parameter names follow the original release exactly, so that its checkpoints load
unchanged; the arithmetic is re-derived from the paper's code, written for inference only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _NormBody(nn.Module):
    """Holds the affine parameters under the original's ``norms.N.body`` key path."""

    def __init__(self, dim: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if with_bias else None


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channel axis of an NCHW tensor (per pixel), eps 1e-5.

    The with-bias form is ``F.layer_norm`` on NHWC, which exports as one ONNX
    ``LayerNormalization`` node that precision tools recognise and keep in float32.
    """

    def __init__(self, dim: int, with_bias: bool = True) -> None:
        super().__init__()
        self.body = _NormBody(dim, with_bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        if self.body.bias is not None:
            x = F.layer_norm(x, self.body.weight.shape, self.body.weight, self.body.bias, eps=1e-5)
        else:  # bias-free: scale by the standard deviation without centring
            x = x * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5) * self.body.weight
        return x.permute(0, 3, 1, 2)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w)


def cosine_scores(q: Tensor, k: Tensor) -> Tensor:
    """Cosine similarity of every query channel with every key channel, over all pixels."""
    return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)


def gram_cosine(gram: Tensor, q_norm: Tensor, k_norm: Tensor) -> Tensor:
    """Cosine scores from the Gram matrix and the norms, each norm clamped as ``F.normalize`` does."""
    return gram / (q_norm.clamp_min(1e-12).unsqueeze(-1) * k_norm.clamp_min(1e-12).unsqueeze(-2))


def fused_projection(pointwise: nn.Conv2d, depthwise: nn.Conv2d, x: Tensor, parts: int) -> tuple[Tensor, ...]:
    """A 1x1 then a depth-wise convolution, cut into ``parts`` tensors along channels."""
    return depthwise(pointwise(x)).chunk(parts, dim=1)


class Projecting(nn.Module):
    """A layer whose inputs pass through a 1x1 + depth-wise convolution pair cut into parts."""

    def project(self, pointwise: nn.Conv2d, depthwise: nn.Conv2d, x: Tensor, parts: int) -> tuple[Tensor, ...]:
        return fused_projection(pointwise, depthwise, x, parts)


class ChannelAttention(Projecting):
    """Transposed (channel-to-channel) attention with L2-normalised queries and keys.

    The normalisation and the channel Gram matrix are sums over every pixel of the image, so a
    tile alone sees other values (tiles override :meth:`scores`, see :mod:`moce.model.global_stats`).
    """

    temperature: nn.Parameter

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        """Cosine scores of ``[N, heads, c, pixels]`` queries and keys."""
        return cosine_scores(q, k)

    def weights(self, q: Tensor, k: Tensor) -> Tensor:
        """Softmax weights ``[N, heads, c, c]`` of ``[N, C, H, W]`` queries and keys."""
        heads = self.temperature.shape[0]
        return torch.softmax(self.scores(_split_heads(q, heads), _split_heads(k, heads)) * self.temperature, dim=-1)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, c, h, w = v.shape
        return (self.weights(q, k) @ _split_heads(v, self.temperature.shape[0])).reshape(b, c, h, w)


class FeedForward(Projecting):
    """Gated depth-wise convolutional feed-forward network (GDFN)."""

    def __init__(self, dim: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.project(self.project_in, self.dwconv, x, 2)
        return self.project_out(F.gelu(x1) * x2)


class Attention(ChannelAttention):
    """Multi-Dconv head transposed self-attention (MDTA)."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.project(self.qkv, self.qkv_dwconv, x, 3)
        return self.project_out(self.attend(q, k, v))


class CrossAttention(ChannelAttention):
    """Transposed attention whose queries come from ``x`` and keys/values from ``y``."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, 1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 7, padding=3, groups=dim * 2, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        q = self.q_dwconv(self.q(x))
        k, v = self.project(self.kv, self.kv_dwconv, y, 2)
        return self.project_out(self.attend(q, k, v))


def pad_to_patches(x: Tensor, p: int) -> Tensor:
    """Zero-pad right/bottom to a multiple of ``p`` (the original pads q and k this way)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))


def fft_patch_mix(q: Tensor, k: Tensor, p: int) -> Tensor:
    """Circular convolution of ``q`` and ``k`` inside each p x p patch (the original's math).

    ``irfft2(rfft2(q) * rfft2(k))`` over zero-padded patches, cropped back to the input size.
    The exported graphs run an exact DFT-matrix form (ONNX has no usable inverse real FFT).
    """
    b, c, h, w = q.shape
    qp, kp = pad_to_patches(q.float(), p), pad_to_patches(k.float(), p)
    nh, nw = qp.shape[2] // p, qp.shape[3] // p
    to_patches = lambda x: x.reshape(b, c, nh, p, nw, p).permute(0, 1, 2, 4, 3, 5)  # noqa: E731
    mixed = torch.fft.irfft2(torch.fft.rfft2(to_patches(qp)) * torch.fft.rfft2(to_patches(kp)), s=(p, p))
    return mixed.permute(0, 1, 2, 4, 3, 5).reshape(b, c, nh * p, nw * p)[:, :, :h, :w]


class FFTAttention(Projecting):
    """Expert body: query/key mixing by circular convolution inside p x p patches."""

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.q = nn.Conv2d(dim, dim, 1, bias=False)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=False)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 7, padding=3, groups=dim * 2)
        self.norm = ChannelLayerNorm(dim, with_bias=True)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def mix_patches(self, q: Tensor, k: Tensor) -> Tensor:
        return fft_patch_mix(q, k, self.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        q = self.q_dwconv(self.q(x))
        k, v = self.project(self.kv, self.kv_dwconv, x, 2)
        return self.proj_out(self.norm(self.mix_patches(q, k)) * v)


class HighPassConv2d(nn.Module):
    """Depth-wise 3x3 Laplacian; the kernel is a stored (frozen) weight in checkpoints."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        kernel = -torch.ones(3, 3)
        kernel[1, 1] = 8.0
        with torch.no_grad():
            self.conv.weight.copy_(kernel.expand(channels, 1, 3, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class FrequencyEmbedding(nn.Module):
    """Global descriptor of the latent's high frequencies, fed to every router."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.high_conv = nn.Sequential(HighPassConv2d(dim), nn.GELU())
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def pool(self, high: Tensor) -> Tensor:
        """Per-channel mean over the image (tiles override it, see :mod:`moce.model.global_stats`)."""
        return high.mean(dim=(-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.pool(self.high_conv(x)))


def conv_unshuffle(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """The original's down-sampling: a 3x3 convolution, then a 2x pixel-unshuffle."""
    return F.pixel_unshuffle(conv(x), 2)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        # a Sequential for the original's ``body.0.weight`` key; :meth:`down` does the unshuffle
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False))

    def down(self, conv: nn.Conv2d, x: Tensor) -> Tensor:
        return conv_unshuffle(conv, x)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.body[0], x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, ln_bias: bool) -> None:
        super().__init__()
        self.norms = nn.ModuleList([ChannelLayerNorm(dim, ln_bias), ChannelLayerNorm(dim, ln_bias)])
        self.mixer = Attention(dim, heads, bias=True)
        self.ffn = FeedForward(dim, hidden, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.norms[0](x))
        return x + self.ffn(self.norms[1](x))


class BlockGroup(nn.Module):
    """A run of blocks under the original's ``layers`` key."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.layers:
            x = block(x)
        return x
