"""A request -> the library's tensors -> a JSON-able answer: the work behind every endpoint.

``prepare_*`` checks everything a client sent (it runs before a job is queued, so a bad request
is a 400 at once, never a failed job); ``run_*`` does the fit in a worker thread.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from condvae.app.bank import ModelBank
from condvae.app.config import ServeConfig
from condvae.app.imaging import decode_image, evidence_overlay, heat, png
from condvae.app.schemas import ConditionRequest, DesignRequest, Evidence
from condvae.conditioning import METHODS, Posterior, check_method, condition
from condvae.design.api import gains
from condvae.errors import CondVAEError
from condvae.models import VAE

STAT_DRAWS = 64  # draws of z behind the per-pixel mean and standard deviation
SCALARS = (bool, int, float)


@functools.cache
def app_options(cls: type[Posterior]) -> list[dict[str, Any]]:
    """The options of a method a client may set: numbers, flags and named choices (never an
    object or a path), with their defaults and types, for the page's form."""
    hints = typing.get_type_hints(cls.__init__)
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.kind is not p.KEYWORD_ONLY:
            continue
        hint = hints.get(p.name)
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if typing.get_origin(hint) is typing.Literal:
            out.append(
                {
                    "name": p.name,
                    "type": "choice",
                    "choices": list(typing.get_args(hint)),
                    "default": p.default,
                }
            )
        elif all(a in SCALARS for a in args):
            kind = "bool" if args == [bool] else ("int" if args == [int] else "float")
            out.append({"name": p.name, "type": kind, "default": p.default})
    return out


def method_table() -> dict[str, Any]:
    return {
        name: {
            "options": app_options(cls),
            "doc": " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split()),
        }
        for name, cls in sorted(METHODS.items())
    }


def methods_for(bank: ModelBank, name: str) -> list[str]:
    """The methods that can run on a model: grid needs a 2-d latent; the amortized ones a
    bundled partial encoder."""
    return _methods_for(bank, name, tuple(METHODS))


@functools.lru_cache(maxsize=64)
def _methods_for(bank: ModelBank, name: str, registered: tuple[str, ...]) -> list[str]:
    vae, has_encoder = bank.vae(name), bank.info(name)["partial_encoder"]
    ok = []
    for method, cls in sorted(METHODS.items()):
        if method == "grid" and vae.latent_dim != 2:
            continue
        if "encoder" in cls.options() and not has_encoder:
            continue
        ok.append(method)
    return ok


@functools.cache
def _option_names(method: str) -> frozenset[str]:
    return frozenset(METHODS[method].options())


def check_runs(bank: ModelBank, method: str, model: str) -> None:
    runs = methods_for(bank, bank.check(model))
    if method not in runs:
        raise CondVAEError(f"method: {method!r} cannot run on {model} (it takes {runs})")


def check_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options, once the library and the server accept them (the same messages)."""
    _check_options(method, tuple(sorted((k, type(v).__name__, v) for k, v in options.items())))
    return options


@functools.lru_cache(maxsize=1024)  # clients repeat a few settings; checking reads type hints
def _check_options(method: str, items: tuple[tuple[str, str, Any], ...]) -> None:
    options = {k: v for k, _, v in items}  # the type's name is in the key: True and 1 hash alike
    cls = check_method(method, options)  # the library's own messages for unknown names and types
    allowed = {o["name"] for o in app_options(cls)}
    refused = sorted(set(options) - allowed)
    if refused:
        raise CondVAEError(
            f"options: {refused} cannot be set through the server (for {method!r} it takes {sorted(allowed)})"
        )


@dataclass
class Item:
    """One query in the model's own form: ``x``, ``mask`` ``[1, *data_shape]``, with notes."""

    name: str
    vae: VAE
    x: torch.Tensor
    mask: torch.Tensor
    notes: list[str]
    table: bool


def _nested(values: Any, argument: str) -> torch.Tensor:
    try:  # through numpy: three times faster than torch.tensor on nested lists
        return torch.from_numpy(np.asarray(values, dtype=np.float32))
    except (TypeError, ValueError, RuntimeError):
        raise CondVAEError(f"{argument}: expected nested lists of numbers of one shape") from None


def _image_mask(req: Evidence, shape: tuple[int, ...], max_side: int) -> torch.Tensor:
    c, h, w = shape
    if isinstance(req.mask, str):
        m, _ = decode_image(req.mask, (1, h, w), max_side, "mask")
        m = m > 0.5
    else:
        m = _nested(req.mask, "mask")
        if not bool(((m == 0) | (m == 1)).all()):
            raise CondVAEError("mask: expected 0/1 values (1 = observed)")
        m = m.bool()
    if tuple(m.shape) == (h, w):
        m = m[None]
    if tuple(m.shape) == (1, h, w):
        m = m.expand(c, h, w)
    if tuple(m.shape) != (c, h, w):
        raise CondVAEError(f"mask: expected [{h}][{w}] or [{c}][{h}][{w}], got {list(m.shape)}")
    return m.clone()


def _image_item(bank: ModelBank, cfg: ServeConfig, req: Evidence, need_mask: bool) -> Item:
    vae = bank.vae(req.model)
    shape = tuple(vae.data_shape)
    notes: list[str] = []
    if (req.image is None) == (req.x is None):
        raise CondVAEError("image: give exactly one of image (a base64 PNG/JPEG) and x (nested lists)")
    if req.image is not None:
        x, note = decode_image(req.image, shape, cfg.max_image_side)  # type: ignore[arg-type]
        notes += [note] if note else []
    else:
        x = _nested(req.x, "x")
        if tuple(x.shape) == shape[1:] and shape[0] == 1:
            x = x[None]
        if tuple(x.shape) != shape:
            raise CondVAEError(f"x: expected an image of shape {list(shape)}, got {list(x.shape)}")
    if req.mask is None:
        if need_mask:
            raise CondVAEError("mask: required: 1 where the pixel is observed")
        mask = torch.zeros(shape, dtype=torch.bool)
    else:
        mask = _image_mask(req, shape, cfg.max_image_side)
    seen = x[mask]
    if not bool(torch.isfinite(seen).all()):
        raise CondVAEError("x: observed pixels must be finite numbers (NaN or inf found)")
    if seen.numel() and (float(seen.min()) < 0 or float(seen.max()) > 1):
        raise CondVAEError(
            f"x: pixel values must be in [0, 1], got [{float(seen.min()):g}, {float(seen.max()):g}]"
        )
    x = torch.where(mask, x, torch.zeros_like(x))
    if getattr(vae.likelihood, "name", "") == "bernoulli" and bool(((x != 0) & (x != 1)).any()):
        x = (x > 0.5).float()  # the model's evidence is binary
        notes.append("x: grey levels were thresholded at 0.5 (this model's pixels are binary)")
    return Item(req.model, vae, x[None].to(vae.device), mask[None].to(vae.device), notes, False)


def upload(bank: ModelBank, cfg: ServeConfig, name: str, image: str) -> dict[str, Any]:
    """An uploaded picture as the model sees it (its size, its channels, binary for a Bernoulli
    model), to paint on; the notes say what was changed."""
    if bank.is_table(bank.check(name)):
        raise CondVAEError(f"image: {name} is a table model; it takes feature values, not pictures")
    mask = [[1] * bank.vae(name).data_shape[-1]] * bank.vae(name).data_shape[-2]
    it = _image_item(bank, cfg, Evidence(model=name, image=image, mask=mask), need_mask=True)
    return {"x": it.x[0].cpu().tolist(), "png": png(it.x[0].cpu()), "notes": it.notes}


def _table_item(bank: ModelBank, req: Evidence) -> Item:
    vae = bank.vae(req.model)
    columns = vae.column_names  # type: ignore[attr-defined]
    if req.image is not None:
        raise CondVAEError(f"image: {req.model} is a table model; give x, one value per feature")
    if not isinstance(req.x, list) or len(req.x) != len(columns):
        got = len(req.x) if isinstance(req.x, list) else "none"
        raise CondVAEError(f"x: expected {len(columns)} values (null = unknown) for {columns}, got {got}")
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in req.x):
        raise CondVAEError("x: expected numbers or null")
    raw = torch.tensor([math.nan if v is None else float(v) for v in req.x], dtype=torch.float64)
    if req.mask is None:
        mask = ~torch.isnan(raw)
    else:
        if (
            isinstance(req.mask, str)
            or len(req.mask) != len(columns)
            or any(m not in (0, 1) for m in req.mask)
        ):
            raise CondVAEError(f"mask: expected {len(columns)} values 0/1 (1 = observed), one per feature")
        mask = torch.tensor(req.mask, dtype=torch.bool)
    missing = [columns[j] for j in range(len(columns)) if mask[j] and math.isnan(raw[j])]
    if missing:
        raise CondVAEError(f"x: {missing} are marked observed but have no value")
    if not bool(torch.isfinite(raw[mask]).all()):
        raise CondVAEError("x: observed values must be finite numbers")
    x = vae.to_model(torch.where(mask, raw, torch.nan)[None].numpy(), "x")  # type: ignore[operator]
    x = torch.where(mask[None], x.nan_to_num(0), torch.zeros_like(x))
    return Item(req.model, vae, x.to(vae.device), mask[None].to(vae.device), [], True)


def item(bank: ModelBank, cfg: ServeConfig, req: Evidence, need_mask: bool = True) -> Item:
    return (
        _table_item(bank, req)
        if bank.is_table(bank.check(req.model))
        else _image_item(bank, cfg, req, need_mask)
    )


@dataclass
class Work:
    """A checked request: the query, the method, the seed."""

    item: Item
    method: str
    seed: int


@dataclass
class ConditionJob(Work):
    options: dict[str, Any]
    n: int
    display: str
    arrays: bool


def prepare_condition(bank: ModelBank, cfg: ServeConfig, req: ConditionRequest) -> ConditionJob:
    if req.n > cfg.max_completions:
        raise CondVAEError(f"n: at most {cfg.max_completions} completions per request, got {req.n}")
    options = check_options(req.method, dict(req.options))
    check_runs(bank, req.method, req.model)
    if "encoder" in _option_names(req.method):  # the encoder loaded once, not found per request
        options["encoder"] = bank.encoder(req.model)
    return ConditionJob(item(bank, cfg, req), req.method, req.seed, options, req.n, req.display, req.arrays)


ONE_PASS = frozenset({"ipa", "ipa-sir", "importance", "grid"})  # no optimisation loop: milliseconds


def lane(method: str) -> str:
    """The job lane of a method: "fast" for one-pass methods, "fit" for iterative ones."""
    return "fast" if method in ONE_PASS else "fit"


def condition_key(job: ConditionJob) -> tuple[Any, ...]:
    """Jobs with equal keys may share one fit (see ``jobs``)."""
    options = tuple(sorted(job.options.items(), key=lambda kv: kv[0]))
    return (job.item.name, job.method, options, job.n, job.seed, job.display)


def _scalars(diagnostics: Any, i: int, batch: int) -> dict[str, Any]:
    """Query i's JSON-able diagnostics: numbers and strings, per-query tensors at index i."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(diagnostics):
        value = getattr(diagnostics, f.name)
        if isinstance(value, torch.Tensor):
            if value.numel() == 1:
                value = value.item()
            elif value.shape[:1] == (batch,) and value[i].numel() == 1:
                value = value[i].item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if value is None or isinstance(value, str | int | float | bool):
            out[f.name] = value
    return out


@torch.no_grad()
def _moments(
    post: Posterior, vae: VAE, x: torch.Tensor, mask: torch.Tensor, n: int, display: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n completions per query (evidence pasted back) ``[n, B, ...]`` and the per-entry
    predictive mean and standard deviation ``[B, ...]`` over ``STAT_DRAWS`` draws of z, by the
    law of total variance: Var[y] = E_z[Var(y | z)] + Var_z[E(y | z)]."""
    z = post.sample(max(n, STAT_DRAWS))  # [K, B, d]
    p = vae.decode(z)
    mean_z = p.mean
    shown = mean_z[:n] if display == "mean" else p.sample()[:n]
    completions = torch.where(mask, x, shown)
    try:
        inner = p.variance.mean(0)
    except NotImplementedError:
        inner = p.sample((8,)).var(0).mean(0)
    std = (inner + mean_z.var(0)).clamp_min(0).sqrt()
    return completions, torch.where(mask, x, mean_z.mean(0)), torch.where(mask, torch.zeros_like(std), std)


def run_conditions(jobs: list[ConditionJob]) -> list[dict[str, Any]]:
    """Jobs of one key (model, method, options, n, seed) as one batch of queries."""
    first, b = jobs[0], len(jobs)
    vae = first.item.vae
    x, mask = torch.cat([j.item.x for j in jobs]), torch.cat([j.item.mask for j in jobs])
    with warnings.catch_warnings(record=True) as caught:  # the library's warnings go to the client
        warnings.simplefilter("always")
        post = condition(vae, x, mask, method=first.method, seed=first.seed, **first.options)
        c_elbo = post.c_elbo(STAT_DRAWS).tolist() if post.has_density else [None] * b
    said = list(dict.fromkeys(str(w.message) for w in caught))
    if b > 1:  # "query i" in a message counts within the batch
        said = [f"(fitted in a batch of {b} requests) {w}" for w in said]
    answers = [
        {
            "model": j.item.name,
            "method": j.method,
            "notes": j.item.notes,
            "warnings": said,
            "c_elbo": c_elbo[i] if c_elbo[i] is None or math.isfinite(c_elbo[i]) else None,
            "diagnostics": _scalars(post.diagnostics, i, b),
            "observed": int(j.item.mask.sum()),
        }
        for i, j in enumerate(jobs)
    ]
    if first.item.table:
        return [a | t for a, t in zip(answers, _table_answers(post, vae, mask, first.n), strict=True)]
    completions, mean, std = (t.cpu() for t in _moments(post, vae, x, mask, first.n, first.display))
    for i, (j, a) in enumerate(zip(jobs, answers, strict=True)):
        a["evidence"] = png(evidence_overlay(x[i].cpu(), mask[i].cpu()))
        a["completions"] = [png(c) for c in completions[:, i]]
        a["mean"] = png(mean[i])
        a["std"], a["std_max"] = heat(std[i].amax(0), cmap="viridis")  # the largest over channels
        if j.arrays:
            a["arrays"] = {
                "completions": completions[:, i].tolist(),
                "mean": mean[i].tolist(),
                "std": std[i].tolist(),
            }
    return answers


@torch.no_grad()
def _table_answers(post: Posterior, vae: VAE, mask: torch.Tensor, n: int) -> list[dict[str, Any]]:
    """Completions in raw units, and per feature the mean, standard deviation and a central
    90% interval over 512 completions, per query."""
    draws = vae.from_model(post.complete(512).cpu())  # type: ignore[operator]  # [512, B, D]
    lo, hi = torch.quantile(draws.double(), torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
    return [
        {
            "columns": vae.column_names,  # type: ignore[attr-defined]
            "completions": draws[:n, i].tolist(),
            "mean": draws[:, i].mean(0).tolist(),
            "std": draws[:, i].std(0).tolist(),
            "interval90": [lo[i].tolist(), hi[i].tolist()],
            "mask": mask[i].cpu().int().tolist(),
        }
        for i in range(draws.shape[1])
    ]


@dataclass
class DesignJob(Work):
    completions: int


def prepare_design(bank: ModelBank, cfg: ServeConfig, req: DesignRequest) -> DesignJob:
    if req.completions > cfg.max_design_completions:
        raise CondVAEError(
            f"completions: at most {cfg.max_design_completions} per request, got {req.completions}"
        )
    check_options(req.method, {})
    check_runs(bank, req.method, req.model)
    it = item(bank, cfg, req, need_mask=False)
    bank.problem(it.name)  # load the classifier now, so a missing one is a 400, not a failed job
    return DesignJob(it, req.method, req.seed, req.completions)


def run_designs(bank: ModelBank, jobs: list[DesignJob]) -> list[dict[str, Any]]:
    """Every candidate's expected information gain given each job's evidence; for images also a
    heat map (each pixel coloured by the gain of the glimpse that shows it)."""
    first = jobs[0]
    prob = bank.problem(first.item.name)
    x, mask = torch.cat([j.item.x for j in jobs]), torch.cat([j.item.mask for j in jobs])
    gain = gains(prob, x, mask, first.method, first.completions, first.seed).cpu()  # [B, C]
    cands = prob.candidates.to("cpu")  # the answer's boxes and heat map are made on the host
    boxes = []
    if not first.item.table:
        for c in range(len(cands)):
            ys, xs = cands.masks[c].any(0).nonzero(as_tuple=True)
            boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
    answers = []
    for i, j in enumerate(jobs):
        ranked = sorted(range(len(cands)), key=lambda c: -float(gain[i, c]))
        rows = [{"index": c, "name": cands.names[c], "eig": float(gain[i, c])} for c in ranked]
        for row in rows if boxes else []:
            row["box"] = boxes[row["index"]]
        out: dict[str, Any] = {
            "model": j.item.name,
            "method": j.method,
            "score": type(prob.eig).__name__,
            "candidates": rows,
            "notes": j.item.notes,
        }
        if boxes:
            per_pixel = (cands.masks.any(1).float() * gain[i][:, None, None]).amax(0)
            out["heat"], out["eig_max"] = heat(per_pixel, cmap="magma")
        answers.append(out)
    return answers
