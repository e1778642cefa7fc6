"""Bayesian experimental design: which glimpse of an image, or which feature of a table, to
observe next, scored by expected information gain under a conditioned VAE.

The module is callable: ``condvae.design(model, x, steps=...)`` is ``design.design``, while
``condvae.design.problem``, ``condvae.design.DesignResult`` and the rest stay reachable, so the
one name serves as the function and as its namespace.
"""

import sys
import types
from typing import Any

from condvae.design.api import BASELINES, Problem, design, gains, problem, sing_order
from condvae.design.candidates import Candidates, features, patch_grid
from condvae.design.eig import ClassifierEIG, LatentEIG, class_eig
from condvae.design.greedy import DesignResult

__all__ = [
    "BASELINES",
    "Candidates",
    "ClassifierEIG",
    "DesignResult",
    "LatentEIG",
    "Problem",
    "class_eig",
    "design",
    "features",
    "gains",
    "patch_grid",
    "problem",
    "sing_order",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> DesignResult:
        return design(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
