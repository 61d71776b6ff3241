"""Rewriting a model from outside: a copy whose layers run other forms of the same arithmetic.

The model's own modules call plain methods (``project``, ``scores``, ``mix_patches``, ...). A
:class:`Rewrite` is a mixin that overrides some of them; :func:`rewritten` returns a deep copy of
a model in which every module of a listed layer type has become an instance of that layer type
with the rewrite mixed in (in the spirit of optimum's ``ModelPatcher``, but on a copy, so the
caller's model never changes). Rewrites compose: applying them again, or in another order, gives
the same classes, and a rewrite with a lower :attr:`Rewrite.order` wins where two override the
same method (tile statistics over export forms).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from typing import ClassVar, TypeVar

from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class Rewrite:
    """A mixin of method overrides for one or more layer classes."""

    order: ClassVar[int] = 10
    """Position in the method resolution order: lower comes first (wins)."""

    @classmethod
    def attach(cls, module: nn.Module) -> None:
        """Add what the overrides need to a module that has just taken this rewrite (scope modules)."""


Rules = Mapping[type[nn.Module], tuple[type[Rewrite], ...]]
"""Layer class -> the rewrites its instances take (matched by ``isinstance``)."""


def layer_class(module: nn.Module) -> type[nn.Module]:
    """The model's own class of ``module``, under any rewrites."""
    return getattr(type(module), "_layer_class", type(module))


def rewrites_of(module: nn.Module) -> tuple[type[Rewrite], ...]:
    """The rewrites ``module`` runs, in method resolution order."""
    return getattr(type(module), "_rewrites", ())


@cache
def _combined(layer: type[nn.Module], rewrites: tuple[type[Rewrite], ...]) -> type[nn.Module]:
    """The one class of ``layer`` with ``rewrites`` mixed in (cached, so equal rewrites share a class)."""
    name = "".join(r.__name__ for r in rewrites) + layer.__name__
    attributes = {"_layer_class": layer, "_rewrites": rewrites, "__module__": layer.__module__}
    return type(name, (*rewrites, layer), attributes)


def _adopt(module: nn.Module, rewrite: type[Rewrite]) -> None:
    if isinstance(module, rewrite):
        return
    applied = sorted({*rewrites_of(module), rewrite}, key=lambda r: (r.order, r.__qualname__))
    module.__class__ = _combined(layer_class(module), tuple(applied))
    rewrite.attach(module)


def rewritten(model: ModuleT, rules: Rules) -> ModuleT:
    """A deep copy of ``model`` whose modules of the rules' layer classes take their rewrites."""
    copied = copy.deepcopy(model)
    for module in list(copied.modules()):
        for layer, rewrites in rules.items():
            if isinstance(module, layer):
                for rewrite in rewrites:
                    _adopt(module, rewrite)
    return copied
