"""``condvae.design``: choose what to observe next, for image glimpses or table features.

``problem(model, ...)`` fixes what can be observed (a grid of patches, or the features of a
table), how information is scored (a partial-image classifier, or EDDI's latent-space gain
towards a target column) and what is predicted; ``design(problem, x, strategy=...)`` runs the
greedy loop on items whose true values are known (the sensor's answers); ``gains(...)`` scores
the candidates once, for evidence seen in the field.

Strategies: ``ipa`` (EIG from the partial encoder's completions, the default), ``ipa-r``, any
per-query method (``gvi``, ``mixture``, ...), ``unconditional`` (completions replaced by random
training items), ``random``, and ``sing``: one fixed order chosen once on training items by the
same greedy rule applied to all of them together (Ma et al., "EDDI", ICML 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from condvae.classifier import PartialClassifier, load_partial_classifier
from condvae.conditioning import METHODS
from condvae.data import fixed_binarize
from condvae.data.tables import load_table
from condvae.design.candidates import Candidates, patch_grid
from condvae.design.candidates import features as feature_candidates
from condvae.design.completions import MethodCompletions, UnconditionalCompletions
from condvae.design.eig import EIG, ClassifierEIG, LatentEIG
from condvae.design.greedy import DesignResult, EIGChooser, OrderChooser, RandomChooser, pick, run, unseen
from condvae.design.predict import ClassPrediction, TargetPrediction
from condvae.errors import CondVAEError
from condvae.evaluate import load_model_dataset
from condvae.guards import check_count, check_device
from condvae.models import VAE
from condvae.models.linear_gaussian import LinearGaussianVAE
from condvae.partial.ipa import resolve_encoder
from condvae.partial.pretrained import find_bundled
from condvae.store import from_pretrained
from condvae.streams import seed_for, seeded

BASELINES = ("unconditional", "random", "sing")


@dataclass
class Problem:
    """A model, what can be observed, how information is scored and what is predicted."""

    vae: VAE
    candidates: Candidates
    eig: EIG
    predict: Callable[..., dict[str, torch.Tensor]]
    dataset: str | None
    target: str | None = None  # the target column's name (tables)
    classifier: torch.nn.Module | None = None
    data_dir: str | None = None
    target_mask: torch.Tensor | None = None  # bool, data_shape: the target's entries

    def __post_init__(self) -> None:
        self.candidates = self.candidates.to(self.vae.device)  # the masks meet the model's tensors

    def hidden(self, like: torch.Tensor) -> torch.Tensor:
        """Where ``like`` holds the target (never observed, never revealed), as a bool tensor."""
        if self.target_mask is None:
            return torch.zeros_like(like, dtype=torch.bool)
        return self.target_mask.to(like.device).expand(like.shape)

    @property
    def is_image(self) -> bool:
        return len(self.vae.data_shape) == 3


def _load(model: VAE | str | Path, device: str | torch.device | None) -> VAE:
    """A bundled name or directory is loaded onto ``device`` (default cpu); a model stays where it is."""
    if not isinstance(model, VAE):
        return from_pretrained(model, "cpu" if device is None else device)
    if device is not None and check_device(device) != model.device:
        raise CondVAEError(
            f"device: the model is on {model.device}, not {device}; move it with .to({str(device)!r}) "
            "or pass its name to load it there"
        )
    return model


def _dataset(vae: VAE) -> str | None:
    return (getattr(vae, "card", None) or {}).get("dataset") or None


def _classifier(vae: VAE, classifier: torch.nn.Module | str | Path | None) -> torch.nn.Module | None:
    dataset = _dataset(vae)
    if classifier is None:
        if dataset is None:
            return None
        try:
            classifier = load_partial_classifier(dataset, vae.device)
        except CondVAEError:
            return None  # no bundled classifier for this dataset: latent-space EIG only
    elif isinstance(classifier, str | Path):
        classifier = load_partial_classifier(classifier, vae.device)
    elif not isinstance(classifier, torch.nn.Module) or not hasattr(classifier, "classes"):
        raise CondVAEError(
            f"classifier: expected a partial-image classifier (a module with classes), a bundled "
            f"name or a directory, got {type(classifier).__name__}"
        )
    shape = tuple(getattr(classifier, "data_shape", vae.data_shape))
    if shape != tuple(vae.data_shape):
        raise CondVAEError(
            f"classifier: it reads {list(shape)} images, this model's are {list(vae.data_shape)}"
        )
    trained_on = getattr(classifier, "dataset", "")
    if trained_on and dataset and trained_on != dataset:
        raise CondVAEError(
            f"classifier: it was trained on {trained_on}, this model on {dataset}; "
            f"pass a classifier of {dataset}"
        )
    return classifier.to(vae.device).eval()


def _encoder(vae: VAE) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """r(z | x_o): a linear-Gaussian model's exact posterior, else its bundled partial encoder."""
    if isinstance(vae, LinearGaussianVAE):
        return vae.posterior
    if find_bundled(vae) is None:
        raise CondVAEError(
            "eig: the latent-space EIG needs a partial encoder of this model; train one with "
            "`condvae train-partial-encoder` or use eig='classifier'"
        )
    encoder = resolve_encoder(vae, None).to(vae.device).eval()
    return lambda x, mask: encoder(x, mask, vae)


def problem(
    model: VAE | str | Path,
    *,
    patch: int | None = None,
    classifier: torch.nn.Module | str | Path | None = None,
    target: str | None = None,
    eig: str | None = None,
    costs: Sequence[float] | torch.Tensor | None = None,
    data_dir: str | None = None,
    device: str | torch.device | None = None,
) -> Problem:
    """What can be observed for ``model`` and how it is scored.

    Images: ``patch`` x ``patch`` glimpses tiling the image (default: a 7 x 7 grid), scored by
    ``eig="classifier"`` (default; the bundled partial-image classifier of the model's dataset
    unless ``classifier`` is given) or ``eig="latent"``. Tables: one candidate per feature but
    ``target`` (default: the column named "target"), scored by the latent-space EIG towards it.
    ``costs``: one positive cost per candidate; the greedy rule maximises EIG per unit cost.
    ``device``: where a named model is loaded (default cpu); a model object is used where it is.
    """
    vae = _load(model, device)
    dataset = _dataset(vae)
    if len(vae.data_shape) == 3:
        if target is not None:
            raise CondVAEError("target: images are designed for their class; target is for tables")
        side = min(vae.data_shape[1:])
        candidates = patch_grid(vae.data_shape, max(1, side // 7) if patch is None else patch, _costs(costs))
        clf = _classifier(vae, classifier)
        kind = eig or ("classifier" if clf is not None else "latent")
        if kind == "classifier" and clf is None:
            raise CondVAEError(
                f"classifier: there is no bundled partial-image classifier for {dataset or 'this model'}; "
                "pass classifier=, or eig='latent'"
            )
        scorer = _scorer(kind, vae, clf, None)
        predict = ClassPrediction(clf) if clf is not None else (lambda x, mask, completions: {})
        return Problem(vae, candidates, scorer, predict, dataset, None, clf, data_dir)
    if patch is not None:
        raise CondVAEError(f"patch: this model's data are feature vectors {list(vae.data_shape)}, not images")
    columns = list(getattr(vae, "column_names", [f"x{i}" for i in range(vae.data_shape[0])]))
    target = "target" if target is None and "target" in columns else target
    if target is not None and target not in columns:
        shown = ", ".join(columns[:6]) + (", ..." if len(columns) > 6 else "")
        raise CondVAEError(f"target: {target!r} is not a column of this model (columns: {shown})")
    exclude = [target] if target is not None else []
    candidates = feature_candidates(columns, exclude, _costs(costs))
    if eig not in (None, "latent"):
        raise CondVAEError(f"eig: tables take the latent-space EIG ('latent'), got {eig!r}")
    index = columns.index(target) if target is not None else None
    target_mask = None
    if index is not None:
        target_mask = torch.zeros(vae.data_shape, dtype=torch.bool, device=vae.device)
        target_mask[index] = True
    scorer = LatentEIG(_encoder(vae), target_mask)
    predict = TargetPrediction(vae, index) if index is not None else (lambda x, mask, completions: {})
    return Problem(vae, candidates, scorer, predict, dataset, target, None, data_dir, target_mask)


def _costs(costs: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    if costs is None:
        return None
    try:
        return torch.as_tensor(costs, dtype=torch.float32)
    except (TypeError, ValueError):
        raise CondVAEError(f"costs: expected a list of positive numbers, got {costs!r}") from None


def _scorer(kind: str, vae: VAE, classifier: torch.nn.Module | None, target: torch.Tensor | None) -> EIG:
    if kind == "classifier":
        # a Bernoulli VAE's data are binary images: its completions are binary draws, like the
        # glimpses the sensor will report (1000 MNIST images: 1-3 points more accuracy after 1-3
        # glimpses than with decoder means); other likelihoods' per-pixel noise is not the
        # camera's (Fashion-MNIST: decoder means 1-5 points better after 1-3 glimpses)
        decoded = "sample" if getattr(vae.likelihood, "name", "") == "bernoulli" else "mean"
        return ClassifierEIG(classifier, decoded)  # type: ignore[arg-type]
    if kind == "latent":
        return LatentEIG(_encoder(vae), target)
    raise CondVAEError(f"eig: expected 'classifier' or 'latent', got {kind!r}")


def check_items(
    prob: Problem, x: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Items ``[B, *data_shape]`` on the model's device, complete except for the target, and
    their evidence (default: nothing observed)."""
    shape = tuple(prob.vae.data_shape)
    if not isinstance(x, torch.Tensor):
        raise CondVAEError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) == shape:
        x = x[None]
    if tuple(x.shape[1:]) != shape or x.shape[0] == 0:
        raise CondVAEError(
            f"x: expected items of shape [B, {', '.join(map(str, shape))}], got {list(x.shape)}"
        )
    x = x.to(prob.vae.device, torch.float32)
    if prob.is_image:  # a table's target may be NaN (unknown); it is checked below
        prob.vae.likelihood.check_support(x, "x")
    if mask is None:
        mask = torch.zeros_like(x, dtype=torch.bool)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) not in (shape, tuple(x.shape)):
        raise CondVAEError(f"mask: expected a bool tensor of the items' shape {list(x.shape)}")
    mask = mask.to(prob.vae.device).bool().expand_as(x).clone()
    hidden = prob.hidden(mask)
    if bool(torch.isnan(x).logical_and(~hidden).any()):
        raise CondVAEError("x: design reveals the items' true values, so they must be complete (NaN found)")
    if bool((mask & hidden).any()):
        raise CondVAEError(f"mask: the target {prob.target!r} cannot be observed; it is what is predicted")
    return torch.where(hidden, torch.zeros_like(x), x), mask


def training_items(prob: Problem, train: torch.Tensor | None = None, limit: int = 10000) -> torch.Tensor:
    """The items the ``unconditional`` and ``sing`` strategies draw on: ``train`` or the model's
    own training split (at most ``limit`` items, a fixed random subset)."""
    if train is None:
        if prob.dataset is None:
            raise CondVAEError("train: this model does not say what it was trained on; pass train= items")
        if prob.is_image:
            train = load_model_dataset(prob.vae, prob.dataset, "train", prob.data_dir).x
            if prob.vae.likelihood.name == "bernoulli":  # the model's evidence is binary
                train = fixed_binarize(train)
        else:
            train = prob.vae.to_model(load_table(prob.dataset, "train").x, "train")  # type: ignore[operator]
    train = torch.as_tensor(train, dtype=torch.float32).to(prob.vae.device)
    if tuple(train.shape[1:]) != tuple(prob.vae.data_shape) or len(train) == 0:
        raise CondVAEError(
            f"train: expected training items [N, {', '.join(map(str, prob.vae.data_shape))}], "
            f"got {list(train.shape)}"
        )
    if len(train) > limit:
        train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:limit]]
    return train


def predictive_method(prob: Problem, strategy: str) -> str:
    """The method whose completions the predictions use: the strategy's own, else ``ipa`` when a
    partial encoder is bundled, else ``gvi``."""
    if strategy in METHODS or strategy == "ipa-r":
        return strategy
    return "ipa" if find_bundled(prob.vae) is not None else "gvi"


def sing_order(
    prob: Problem,
    train: torch.Tensor,
    steps: int,
    completions: int = 16,
    method: str = "ipa",
    items: int = 200,
    seed: int = 0,
) -> list[int]:
    """EDDI's SING: one order for all items, each step the candidate of largest mean EIG per
    unit cost over ``items`` training items that share the evidence chosen so far."""
    pool = train[:items]
    pool = torch.where(prob.hidden(pool), torch.zeros_like(pool), pool)
    complete = MethodCompletions(prob.vae, method, seed)
    mask = torch.zeros_like(pool, dtype=torch.bool)
    order: list[int] = []
    cand = prob.candidates.to(pool.device)
    for t in range(steps):
        fill = complete(pool, mask, completions, prob.eig.decoded, t).fill
        mean_gain = prob.eig(pool, mask, fill, cand).mean(0, keepdim=True)
        chosen = int(pick(mean_gain, mask[:1], cand, per_cost=True)[0])
        order.append(chosen)
        mask = mask | cand.masks[chosen]
    return order


def design(
    model: Problem | VAE | str | Path,
    x: torch.Tensor,
    *,
    steps: int = 4,
    strategy: str = "ipa",
    mask: torch.Tensor | None = None,
    completions: int = 16,
    train: torch.Tensor | None = None,
    order: list[int] | None = None,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    **setup: Any,
) -> DesignResult:
    """``steps`` greedy steps of experimental design for each item of ``x`` (true values known).

    ``model``: a ``Problem`` or a VAE / bundled name, set up with ``setup`` (``patch``,
    ``classifier``, ``target``, ``eig``, ``costs``, ``data_dir``, ``device``: see ``problem``). ``mask``:
    evidence before the first step (default none). ``completions``: N per item and step.
    ``train``: items for ``unconditional`` and ``sing`` (default: the model's training split).
    ``order``: a ready SING order. ``options``: the conditioning method's options.
    """
    prob = model if isinstance(model, Problem) else problem(model, **setup)
    if setup and isinstance(model, Problem):
        raise CondVAEError(f"{sorted(setup)[0]}: set up a Problem once, or pass a model with its settings")
    known = ("ipa", "ipa-r", *sorted(METHODS), *BASELINES)
    if not isinstance(strategy, str) or strategy not in known:
        raise CondVAEError(
            f"strategy: unknown {strategy!r}; expected one of {', '.join(dict.fromkeys(known))}"
        )
    check_count(steps, "steps", what="number of steps")
    check_count(seed, "seed", low=0, what="seed")
    check_count(completions, "completions", what="number of completions")
    if steps > len(prob.candidates):
        raise CondVAEError(f"steps: {steps} is more than the {len(prob.candidates)} candidates")
    x, mask = check_items(prob, x, mask)
    left = unseen(mask, prob.candidates.to(x.device)).sum(1)
    if int(left.min()) < steps:
        item = int(left.argmin())
        raise CondVAEError(
            f"steps: {steps} is more than the {int(left[item])} candidates item {item} has not seen yet"
        )
    method = predictive_method(prob, strategy)
    # completions draw y ~ p(y | z) from torch's global generator: a fixed seed for them makes
    # a design a function of its arguments, not of what the caller drew before
    with seeded(seed_for(seed, "design/noise"), prob.vae.device):
        complete = MethodCompletions(prob.vae, method, seed, options if method == strategy else None)
        if strategy == "random":
            chooser: Any = RandomChooser(prob.candidates, seed)
        elif strategy == "sing":
            if order is not None and (
                not all(isinstance(c, int) and 0 <= c < len(prob.candidates) for c in order)
                or len(order) < steps
            ):
                raise CondVAEError(
                    f"order: expected at least {steps} candidate indices in 0..{len(prob.candidates) - 1}, "
                    f"got {order!r}"
                )
            if order is None:
                order = sing_order(prob, training_items(prob, train), steps, completions, method, seed=seed)
            chooser = OrderChooser(list(order), prob.candidates)
        elif strategy == "unconditional":
            pool = UnconditionalCompletions(training_items(prob, train), seed)
            chooser = EIGChooser(prob.eig, prob.candidates, pool, completions)
        else:
            chooser = EIGChooser(prob.eig, prob.candidates)
        result = run(
            x,
            mask,
            prob.candidates,
            steps,
            chooser,
            complete,
            prob.predict,
            completions,
            prob.eig.decoded,
            strategy,
            progress,
        )
    result.info = {"completions": method, "eig": type(prob.eig).__name__}
    if order is not None:
        result.info["order"] = ", ".join(prob.candidates.names[i] for i in order)
    return result


def gains(
    prob: Problem,
    x: torch.Tensor,
    mask: torch.Tensor,
    method: str = "ipa",
    completions: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """Every candidate's EIG ``[B, C]`` given the evidence ``x``, ``mask`` (unobserved values of
    ``x`` may be anything, NaN included); 0 for what is already seen."""
    check_count(completions, "completions", what="number of completions")
    if not isinstance(x, torch.Tensor) or not isinstance(mask, torch.Tensor) or x.shape != mask.shape:
        raise CondVAEError("mask: expected a bool tensor of the shape of x (True = observed)")
    x, mask = check_items(prob, torch.where(mask.bool(), x.nan_to_num(0), torch.zeros_like(x)), mask)
    with seeded(seed_for(seed, "design/noise"), prob.vae.device):
        fill = MethodCompletions(prob.vae, method, seed)(x, mask, completions, prob.eig.decoded, 0).fill
        return prob.eig(x, mask, fill, prob.candidates.to(x.device))


__all__ = ["BASELINES", "PartialClassifier", "Problem", "design", "gains", "problem", "sing_order"]
