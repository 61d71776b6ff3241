"""Training-time forward pass and losses, kept outside the inference model.

The model stays inference-clean; here the same plan is walked with the original's training
routing: Gaussian noise on the logits, top-k, samples dispatched to their experts and combined
with differentiable gates, and the complexity-biased load-balancing loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from moce.model.network import MoCEIR
from moce.model.plan import IMAGE, RESTORED, AdapterStep, SegmentStep


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


def training_forward(model: MoCEIR, image: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
    """``(restored, balance_loss, routes)``; ``image`` sides must be multiples of 8."""
    k = model.config.top_k
    noise_std = 1.0 / model.config.num_experts
    env: dict[str, Tensor] = {IMAGE: image}
    balance = image.new_zeros(())
    routes = []
    for step in model.plan:
        if isinstance(step, SegmentStep):
            env.update(model.run_segment(step.index, env))
            continue
        assert isinstance(step, AdapterStep)
        adapter = model.adapter(step.index)
        logits = env[step.logits]
        noisy = logits + torch.randn_like(logits) * noise_std
        gates, chosen = noisy.softmax(-1).topk(k, dim=-1)
        balance = balance + 0.5 * importance_loss(logits.softmax(-1), adapter.routing.complexity) \
            + 0.5 * load_loss(logits, noisy, noise_std, k)
        x, shared = (env[n] for n in step.inputs)
        out = torch.zeros_like(x)
        for e in chosen.unique().tolist():
            rows, slots = (chosen == e).nonzero(as_tuple=True)
            y = adapter.expert(e)(x[rows], shared[rows]) * gates[rows, slots].view(-1, 1, 1, 1)
            out = out.index_add(0, rows, y)
        env[step.output] = out
        routes.append(chosen[:, 0])
    return env[RESTORED], balance / model.config.num_adapters, routes


def fft_l1(pred: Tensor, target: Tensor) -> Tensor:
    """L1 between real and imaginary parts of the 2-D spectra (the paper's FFT loss)."""
    a, b = torch.fft.rfft2(pred), torch.fft.rfft2(target)
    return F.l1_loss(torch.view_as_real(a), torch.view_as_real(b))


def objective(model: MoCEIR, degraded: Tensor, clean: Tensor, fft_weight: float = 0.1,
              balance_weight: float = 0.01) -> tuple[Tensor, dict[str, float]]:
    restored, balance, _ = training_forward(model, degraded)
    l1 = F.l1_loss(restored, clean)
    fft = fft_l1(restored, clean)
    loss = l1 + fft_weight * fft + balance_weight * balance
    return loss, {"l1": l1.item(), "fft": fft.item(), "balance": balance.item()}
