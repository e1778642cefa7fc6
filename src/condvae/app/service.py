"""A request -> the library's tensors -> a JSON-able answer: the work behind every endpoint.

``prepare_*`` checks everything a client sent (it runs before a job is queued, so a bad request
is a 400 at once, never a failed job); ``run_*`` does the fit in a worker thread.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass
from typing import Any

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


def method_table(bank: ModelBank) -> dict[str, Any]:
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
    vae, has_encoder = bank.vae(name), bank.info(name)["partial_encoder"]
    ok = []
    for method, cls in sorted(METHODS.items()):
        if method == "grid" and vae.latent_dim != 2:
            continue
        if "encoder" in cls.options() and not has_encoder:
            continue
        ok.append(method)
    return ok


def check_runs(bank: ModelBank, method: str, model: str) -> None:
    runs = methods_for(bank, bank.check(model))
    if method not in runs:
        raise CondVAEError(f"method: {method!r} cannot run on {model} (it takes {runs})")


def check_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    cls = check_method(method, options)  # the library's own messages for unknown names and types
    allowed = {o["name"] for o in app_options(cls)}
    refused = sorted(set(options) - allowed)
    if refused:
        raise CondVAEError(
            f"options: {refused} cannot be set through the server (for {method!r} it takes {sorted(allowed)})"
        )
    return options


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
    try:
        return torch.tensor(values, dtype=torch.float32)
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
class ConditionJob:
    item: Item
    method: str
    options: dict[str, Any]
    n: int
    seed: int
    display: str
    arrays: bool


def prepare_condition(bank: ModelBank, cfg: ServeConfig, req: ConditionRequest) -> ConditionJob:
    if req.n > cfg.max_completions:
        raise CondVAEError(f"n: at most {cfg.max_completions} completions per request, got {req.n}")
    options = check_options(req.method, dict(req.options))
    check_runs(bank, req.method, req.model)
    return ConditionJob(item(bank, cfg, req), req.method, options, req.n, req.seed, req.display, req.arrays)


def _scalars(diagnostics: Any) -> dict[str, Any]:
    """The diagnostics' JSON-able fields: numbers, strings, one-query tensors as numbers."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(diagnostics):
        value = getattr(diagnostics, f.name)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if value is None or isinstance(value, str | int | float | bool):
            out[f.name] = value
    return out


@torch.no_grad()
def _moments(
    post: Posterior, item: Item, n: int, display: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n completions (evidence pasted back) and the per-entry predictive mean and standard
    deviation over ``STAT_DRAWS`` draws of z, by the law of total variance:
    Var[y] = E_z[Var(y | z)] + Var_z[E(y | z)]."""
    vae, x, mask = item.vae, item.x, item.mask
    z = post.sample(max(n, STAT_DRAWS))  # [K, 1, d]
    p = vae.decode(z)
    mean_z = p.mean
    shown = mean_z[:n] if display == "mean" else p.sample()[:n]
    completions = torch.where(mask, x, shown)[:, 0]
    try:
        inner = p.variance.mean(0)
    except NotImplementedError:
        inner = p.sample((8,)).var(0).mean(0)
    mean = mean_z.mean(0)
    std = (inner + mean_z.var(0)).clamp_min(0).sqrt()
    return completions, torch.where(mask, x, mean)[0], torch.where(mask, torch.zeros_like(std), std)[0]


def run_condition(job: ConditionJob) -> dict[str, Any]:
    it = job.item
    post = condition(it.vae, it.x, it.mask, method=job.method, seed=job.seed, **job.options)
    c_elbo = float(post.c_elbo(256)[0]) if post.has_density else None
    out: dict[str, Any] = {
        "model": it.name,
        "method": job.method,
        "notes": it.notes,
        "c_elbo": c_elbo if c_elbo is None or math.isfinite(c_elbo) else None,
        "diagnostics": _scalars(post.diagnostics),
        "observed": int(it.mask.sum()),
    }
    if it.table:
        return out | _table_answer(post, it, job.n)
    completions, mean, std = _moments(post, it, job.n, job.display)
    std_map = std.amax(0)  # the largest over channels: one map per pixel
    out |= {
        "evidence": png(evidence_overlay(it.x[0].cpu(), it.mask[0].cpu())),
        "completions": [png(c) for c in completions.cpu()],
        "mean": png(mean.cpu()),
    }
    out["std"], out["std_max"] = heat(std_map.cpu(), cmap="viridis")
    if job.arrays:
        out["arrays"] = {
            "completions": completions.cpu().tolist(),
            "mean": mean.cpu().tolist(),
            "std": std.cpu().tolist(),
        }
    return out


@torch.no_grad()
def _table_answer(post: Posterior, it: Item, n: int) -> dict[str, Any]:
    """Completions in raw units, and per feature the mean, standard deviation and a central
    90% interval over 512 completions."""
    vae = it.vae
    draws = vae.from_model(post.complete(512)[:, 0].cpu())  # type: ignore[operator]
    lo, hi = torch.quantile(draws.double(), torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
    return {
        "columns": vae.column_names,  # type: ignore[attr-defined]
        "completions": draws[:n].tolist(),
        "mean": draws.mean(0).tolist(),
        "std": draws.std(0).tolist(),
        "interval90": [lo.tolist(), hi.tolist()],
        "mask": it.mask[0].cpu().int().tolist(),
    }


@dataclass
class DesignJob:
    item: Item
    method: str
    completions: int
    seed: int


def prepare_design(bank: ModelBank, cfg: ServeConfig, req: DesignRequest) -> DesignJob:
    if req.completions > cfg.max_design_completions:
        raise CondVAEError(
            f"completions: at most {cfg.max_design_completions} per request, got {req.completions}"
        )
    check_options(req.method, {})
    check_runs(bank, req.method, req.model)
    it = item(bank, cfg, req, need_mask=False)
    bank.problem(it.name)  # load the classifier now, so a missing one is a 400, not a failed job
    return DesignJob(it, req.method, req.completions, req.seed)


def run_design(bank: ModelBank, job: DesignJob) -> dict[str, Any]:
    """Every candidate's expected information gain given the evidence; for images also a heat
    map (each pixel coloured by the gain of the glimpse that shows it)."""
    it = job.item
    prob = bank.problem(it.name)
    gain = gains(prob, it.x, it.mask, job.method, job.completions, job.seed)[0].cpu()  # [C]
    cands = prob.candidates
    ranked = sorted(range(len(cands)), key=lambda c: -float(gain[c]))
    rows = []
    for c in ranked:
        row: dict[str, Any] = {"index": c, "name": cands.names[c], "eig": float(gain[c])}
        if not it.table:
            ys, xs = cands.masks[c].any(0).nonzero(as_tuple=True)
            row["box"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        rows.append(row)
    out: dict[str, Any] = {
        "model": it.name,
        "method": job.method,
        "score": type(prob.eig).__name__,
        "candidates": rows,
        "notes": it.notes,
    }
    if not it.table:
        per_pixel = (cands.masks.any(1).float() * gain[:, None, None]).amax(0)
        out["heat"], out["eig_max"] = heat(per_pixel, cmap="magma")
    return out
