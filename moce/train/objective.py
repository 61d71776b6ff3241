"""Training-time forward pass and losses, kept outside the inference model.

The model stays inference-clean; here the same plan is walked with the original's training
routing: Gaussian noise on the logits, top-k, samples dispatched to their experts and combined
with differentiable gates, and the complexity-biased load-balancing loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from moce.model.network import MoCEIR, TorchRows
from moce.model.plan import AdapterStep, walk
from moce.names import IMAGE, RESTORED


def importance_loss(probs: Tensor, complexity: Tensor) -> Tensor:
    """Squared coefficient of variation of complexity-weighted expert importance."""
    importance = probs.sum(0) * complexity
    return (importance.std() / (importance.mean() + 1e-8)) ** 2


def load_loss(logits: Tensor, noisy: Tensor, noise_std: float, k: int) -> Tensor:
    """Squared CV of each expert's probability of making the top-k under the routing noise."""
    threshold = noisy.topk(k, dim=-1).values[:, -1:]
    p = 1.0 - torch.distributions.Normal(0.0, 1.0).cdf((threshold - logits) / noise_std)
    load = p.mean(0)
    return (load.std() / (load.mean() + 1e-8)) ** 2


def route_contrast_loss(probs: list[Tensor], tasks: Tensor, eps: float = 1e-4) -> Tensor:
    """Binary cross-entropy of "two crops take the same route vector" against "they share a task".

    ``probs`` holds each adapter's routing distribution ``(N, E)``; crops i and j take the same
    route vector with probability ``prod_a <p_i^a, p_j^a>``. Pushing that to 0 across tasks and to 1
    within a task makes routes task-discriminative (the paper reports this emerges without labels;
    on a small CPU budget it did not, see the model card). The log keeps gradients alive where the
    routers are already confident, which a plain difference of agreements lacks. Zero for a batch
    without any pair of crops to compare.
    """
    same_route = torch.stack([p @ p.T for p in probs]).prod(0).clamp(eps, 1 - eps)
    same_task = tasks[:, None] == tasks[None, :]
    off_diagonal = ~torch.eye(tasks.numel(), dtype=torch.bool, device=tasks.device)
    pairs = same_route[off_diagonal]
    if pairs.numel() == 0:
        return same_route.new_zeros(())
    return F.binary_cross_entropy(pairs, same_task[off_diagonal].to(pairs.dtype))


class PaddedRows(TorchRows):
    """Each expert runs on its rows padded by :func:`bucketed` (the extra outputs are dropped)."""

    def take(self, value: Tensor, rows: Tensor) -> Tensor:
        return super().take(value, bucketed(rows.to(value.device)))


def bucketed(rows: Tensor) -> Tensor:
    """``rows`` padded (by repeating its first index) to the next power of two, so that an expert sees at
    most log2(batch) + 1 distinct batch sizes. On CUDA each new convolution shape makes cuDNN build a new
    execution plan (about 8 ms per call on an H100 with torch 2.11): with sub-batches of every size from 1
    to 32, a step of batch 32 took 0.6 to 8.7 s. Samples are independent in every layer, so the padded
    rows only cost compute; their outputs are dropped."""
    size = 1 << max(0, rows.numel() - 1).bit_length()
    return torch.cat([rows, rows[:1].expand(size - rows.numel())])


def training_forward(
    model: MoCEIR, image: Tensor, pad_sub_batches: bool | None = None
) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """``(restored, balance_loss, routes, route_probs)``; ``image`` sides must be multiples of 8.

    ``pad_sub_batches`` (default: on CUDA) runs each expert on a power-of-two sub-batch, see ``bucketed``.
    """
    pad = image.is_cuda if pad_sub_batches is None else pad_sub_batches
    k = model.config.top_k
    noise_std = 1.0 / model.config.num_experts
    balance = image.new_zeros(())
    routes, route_probs = [], []

    def adapter_step(step: AdapterStep, env: dict[str, Tensor]) -> Tensor:
        nonlocal balance
        adapter = model.adapter(step.index)
        logits = env[step.logits]
        noisy = logits + torch.randn_like(logits) * noise_std
        gates, chosen = noisy.softmax(-1).topk(k, dim=-1)
        route_probs.append(logits.softmax(-1))
        balance = (
            balance
            + 0.5 * importance_loss(route_probs[-1], adapter.routing.complexity)
            + 0.5 * load_loss(logits, noisy, noise_std, k)
        )
        routes.append(chosen[:, 0])
        groups = []
        for e in chosen.unique().tolist():
            rows, slots = (chosen == e).nonzero(as_tuple=True)
            groups.append((e, rows, gates[rows, slots]))
        return adapter.mix(*(env[n] for n in step.inputs), groups, PaddedRows() if pad else None)

    env = walk(model.plan, {IMAGE: image}, lambda step, env: model.run_segment(step.index, env), adapter_step)
    return env[RESTORED], balance / model.config.num_adapters, routes, route_probs


def _spectrum(x: Tensor) -> Tensor:
    """Real and imaginary parts of the 2-D spectrum, the values both FFT losses compare."""
    return torch.view_as_real(torch.fft.rfft2(x))


def fft_l1(pred: Tensor, target: Tensor) -> Tensor:
    """L1 between real and imaginary parts of the 2-D spectra (the paper's FFT loss)."""
    return F.l1_loss(_spectrum(pred), _spectrum(target))


IDENTITY_ERROR = 0.05
"""The input error a clean (identity) sample is weighted as, about a sigma-15 noisy input's: an average
sample's weight. Its own error, 0, would give it all of the batch's weight; weighted like a mild blur
(0.01), clean samples outweighed hazy ones 30-fold and a fine-tune learnt to leave haze in place."""


def _inverse_error_weighted(per_sample: Tensor, input_error: Tensor) -> Tensor:
    """Mean of ``per_sample`` losses weighted by the inverse of each input's own error (weights average 1)."""
    error = input_error.detach()
    weight = 1.0 / torch.where(error > 0, error.clamp_min(1e-3), torch.full_like(error, IDENTITY_ERROR))
    return (per_sample * weight / weight.mean()).mean()


def relative_l1_loss(restored: Tensor, degraded: Tensor, clean: Tensor) -> Tensor:
    """L1 with each sample weighted by the inverse of its input's own L1 error (weights average 1).

    Plain L1 lets heavy degradations (noise sigma 50, low light: input error ~0.2) outweigh mild
    ones (blur: ~0.02) tenfold, so a small model learns to smooth; this gives every sample a say in
    proportion to how much of its own error is removed. Not in the paper (an option of moce train).
    """

    def per_sample(x: Tensor) -> Tensor:
        return (x - clean).abs().flatten(1).mean(1)

    return _inverse_error_weighted(per_sample(restored), per_sample(degraded))


def relative_fft_loss(restored: Tensor, degraded: Tensor, clean: Tensor) -> Tensor:
    """The FFT loss with the same per-sample weighting as :func:`relative_l1_loss`.

    The FFT term is most of the paper's loss (about 0.13 of 0.16 in training here) and, like L1,
    it is dominated by noisy inputs; weighting L1 alone left blur with a small share of the loss.
    Not in the paper (an option of moce train).
    """
    target = _spectrum(clean)

    def per_sample(x: Tensor) -> Tensor:
        return (_spectrum(x) - target).abs().flatten(1).mean(1)

    return _inverse_error_weighted(per_sample(restored), per_sample(degraded))


def _chroma(x: Tensor) -> Tensor:
    """Each pixel's deviation from its own grey level (``x - mean over channels``)."""
    return x - x.mean(1, keepdim=True)


def colour_loss(restored: Tensor, clean: Tensor) -> Tensor:
    """L1 between per-image channel means (colour casts) plus L1 between chroma maps (saturation).

    Chroma is each pixel's deviation from its own grey level (``x - mean over channels``). L1 weighs
    errors of chroma and of luminance alike; this term makes greyed or tinted restorations cost
    extra, while a brightness error costs nothing here. Not in the paper (an option of moce train).
    """
    means = (restored.mean((2, 3)) - clean.mean((2, 3))).abs().mean()
    return means + (_chroma(restored) - _chroma(clean)).abs().mean()


def saturation_loss(restored: Tensor, clean: Tensor) -> Tensor:
    """L1 between per-image mean chroma magnitudes: how colourful the image is overall.

    Where a degradation leaves a pixel's colour uncertain (dark, hazy), the pixel losses are lowest
    for a colour between the candidates, that is a greyer one; this term asks only that the image
    as a whole be as colourful as the clean one. Not in the paper (an option of moce train).
    """
    magnitude = lambda x: _chroma(x).abs().sum(1).mean((1, 2))  # noqa: E731
    return (magnitude(restored) - magnitude(clean)).abs().mean()


def objective(
    model: MoCEIR,
    degraded: Tensor,
    clean: Tensor,
    fft_weight: float = 0.1,
    balance_weight: float = 0.01,
    tasks: Tensor | None = None,
    route_weight: float = 0.0,
    relative_l1: bool = False,
    relative_fft: bool = False,
    colour_weight: float = 0.0,
    saturation_weight: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """The paper's loss (L1 + FFT + load balance), plus the route contrast when ``route_weight`` > 0;
    ``relative_l1`` / ``relative_fft`` swap the L1 / FFT terms for their per-sample weighted forms;
    ``colour_weight`` > 0 adds :func:`colour_loss`, ``saturation_weight`` > 0 :func:`saturation_loss`.

    ``tasks`` holds one integer task label per sample; it is needed only for the route contrast.
    """
    restored, balance, _, route_probs = training_forward(model, degraded)
    l1 = relative_l1_loss(restored, degraded, clean) if relative_l1 else F.l1_loss(restored, clean)
    fft = relative_fft_loss(restored, degraded, clean) if relative_fft else fft_l1(restored, clean)
    loss = l1 + fft_weight * fft + balance_weight * balance
    parts = {"l1": l1.item(), "fft": fft.item(), "balance": balance.item()}
    if colour_weight > 0:
        colour = colour_loss(restored, clean)
        loss = loss + colour_weight * colour
        parts["colour"] = colour.item()
    if saturation_weight > 0:
        saturation = saturation_loss(restored, clean)
        loss = loss + saturation_weight * saturation
        parts["saturation"] = saturation.item()
    if route_weight > 0:
        if tasks is None:
            raise ValueError("route_weight > 0 needs the task label of every sample")
        contrast = route_contrast_loss(route_probs, tasks)
        loss = loss + route_weight * contrast
        parts["route"] = contrast.item()
    return loss, parts
