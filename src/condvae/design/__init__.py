"""Bayesian experimental design: which glimpse of an image, or which feature of a table, to
observe next, scored by expected information gain under a conditioned VAE."""

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
