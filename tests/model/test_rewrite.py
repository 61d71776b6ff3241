"""Rewrites apply to a copy, compose in a fixed order whatever the order they are applied in, and nest."""

from __future__ import annotations

import torch
from torch import nn

from moce.model.rewrite import Rewrite, layer_class, rewrites_of, rewritten


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(2.0))

    def factor(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor()


class Negate(Rewrite):
    def factor(self) -> torch.Tensor:
        return -super().factor()


class Triple(Rewrite):
    order = 0  # before Negate in the method resolution order

    attached = 0

    @classmethod
    def attach(cls, module: nn.Module) -> None:
        cls.attached += 1
        module.extra = nn.Identity()

    def factor(self) -> torch.Tensor:
        return 3 * super().factor()


def model() -> nn.Module:
    return nn.Sequential(Scale(), nn.ReLU(), Scale())


def test_a_rewrite_changes_a_copy_only():
    original = model()
    copy = rewritten(original, {Scale: (Negate,)})
    x = torch.ones(1)
    assert original(x).item() == 4.0
    assert copy(x).item() == 0.0  # -2 after the first Scale, 0 after the ReLU
    assert [type(m) for m in original] == [Scale, nn.ReLU, Scale]
    assert layer_class(copy[0]) is Scale and rewrites_of(copy[0]) == (Negate,)
    assert copy[0].weight is not original[0].weight


def test_rewrites_compose_in_one_order_whatever_order_they_are_applied_in():
    one = rewritten(rewritten(model(), {Scale: (Negate,)}), {Scale: (Triple,)})
    other = rewritten(model(), {Scale: (Triple, Negate)})
    assert type(one[0]) is type(other[0])
    assert rewrites_of(one[0]) == (Triple, Negate)
    assert one[0].factor().item() == -6.0


def test_applying_a_rewrite_again_changes_nothing():
    Triple.attached = 0
    once = rewritten(model(), {Scale: (Triple,)})
    twice = rewritten(once, {Scale: (Triple,)})
    assert Triple.attached == 2  # once per Scale, not again on the second pass
    assert [type(m) for m in twice.modules()] == [type(m) for m in once.modules()]
    assert twice[0].factor().item() == 6.0
