"""Condition a whole dataset, split across processes, resumable: ``condition_dataset``.

The queries (items of a dataset split, each with its own mask) are cut into chunks of
``chunk`` queries; under torchrun rank r takes chunks r, r + W, r + 2W, ... of W processes.
Each finished chunk is written at once, atomically, as ``shards/<chunk>.safetensors`` (its
query indices, completions, latent draws, C-ELBO and per-query diagnostics), so a crash or a
killed rank loses at most the chunks in flight: a rerun with the same settings reads which
shards are whole and does only the rest. ``manifest.json`` records the settings (a rerun with
others is refused) and, once every chunk is written, that the output is complete.
``read_results`` gives it back as one dataset in query order.

A query's answer depends only on its evidence, its mask and the seed, never on which chunk or
rank computed it (``condition``'s contract), so any number of processes gives the results of
one (to float rounding of batched kernels).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from condvae import distributed
from condvae.checkpoint import atomic_save_tensors, atomic_write_bytes, discard_temp_files, read_tensors
from condvae.conditioning import METHODS, Query, check_method, condition
from condvae.data.binarize import fixed_binarize
from condvae.data.tables import is_table_name
from condvae.errors import CheckpointError, CondVAEError
from condvae.evaluate import load_model_dataset
from condvae.guards import check_count, check_memory, check_output_folder
from condvae.masks import RANDOM_KINDS, make_mask, sample_masks
from condvae.models import VAE
from condvae.models.precision import mixed_precision
from condvae.store import from_pretrained
from condvae.streams import generator

MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT = "condvae-conditioned-dataset"


@dataclass
class Settings:
    """What a run computes; a rerun into the same folder must have the same."""

    model: str
    dataset: str  # name:split, e.g. mnist:test
    mask: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    completions: int = 4  # per query, decoder means with the evidence pasted back (float16)
    samples: int = 16  # latent draws per query (float32)
    chunk: int = 64
    limit: int | None = None  # the first this many items of the split
    precision: str = "float32"  # or "bfloat16": decoder forward passes under autocast (for CUDA)


def _dataset(vae: VAE, spec: str, data_dir: str | None, limit: int | None) -> torch.Tensor:
    name, _, split = spec.rpartition(":")
    if not name or split not in ("train", "valid", "test"):
        raise CondVAEError(f"dataset: expected name:split (split train, valid or test), got {spec!r}")
    x = load_model_dataset(vae, name, split, data_dir).x
    if limit is not None:
        x = x[:limit]
    if not is_table_name(name) and getattr(vae.likelihood, "name", "") == "bernoulli":
        x = fixed_binarize(x)  # the model's evidence is binary: the fixed evaluation binarisation
    return x


def query_masks(spec: str, count: int, data_shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One mask per query ``[count, *data_shape]``: a random kind draws query i's mask as row i
    of one seeded draw (so it does not depend on the chunking), a fixed kind is the same for all."""
    kind = spec.lstrip("~")
    if kind.startswith("random") or kind in RANDOM_KINDS or kind == "mixture":
        return sample_masks(spec, count, data_shape, generator(seed, "dataset/masks"))
    return make_mask(spec, data_shape, seed).expand(count, *data_shape).clone()


def _check_manifest(out: Path, settings: Settings, chunks: int) -> None:
    path = out / MANIFEST
    wanted = {"format": FORMAT, "settings": asdict(settings), "chunks": chunks}
    if path.exists():
        try:
            found = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise CheckpointError(f"out: {str(path)!r} is not a readable manifest") from None
        if found.get("format") != FORMAT or found.get("settings") != wanted["settings"]:
            differ = sorted(k for k, v in wanted["settings"].items() if found.get("settings", {}).get(k) != v)
            raise CondVAEError(
                f"out: {str(out)!r} holds results of other settings ({differ or 'another format'}); "
                "choose another folder or rerun with the same settings"
            )
        return
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        (out / SHARDS).mkdir(exist_ok=True)
        atomic_write_bytes(path, json.dumps({**wanted, "complete": False}, indent=2).encode())


def _done(path: Path, size: int) -> bool:
    """A shard is done when it reads back whole with its queries (a kill mid-write leaves a temp file)."""
    try:
        tensors, _ = read_tensors(path)
    except CheckpointError:
        return False
    return "index" in tensors and len(tensors["index"]) == size


def _chunk_result(vae: VAE, x: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, s: Settings) -> dict:
    post = condition(vae, x, mask, method=s.method, seed=s.seed, **s.options)
    out: dict[str, torch.Tensor] = {"index": index, "mask": mask.cpu()}
    with torch.no_grad():
        if s.samples:
            out["z"] = post.sample(s.samples).transpose(0, 1).float().cpu().contiguous()  # [C, S, d]
        if s.completions:
            completions = post.complete(s.completions, mean=True)  # [n, C, ...]
            out["completions"] = completions.transpose(0, 1).half().cpu().contiguous()
        if post.has_density:
            out["c_elbo"] = post.c_elbo(256).float().cpu()
    for name, value in vars(post.diagnostics).items():
        if isinstance(value, torch.Tensor) and value.shape[:1] == (len(index),) and value.dim() == 1:
            out[f"diagnostics.{name}"] = value.detach().float().cpu()
    return out


def condition_dataset(
    settings: Settings,
    out: str | Path,
    *,
    data_dir: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Condition every query of ``settings.dataset`` and write the shards into ``out`` (see the
    module docstring); returns ``out``. Under torchrun each rank does its share."""
    s = settings
    check_count(s.chunk, "chunk", what="number of queries per shard")
    check_count(s.seed, "seed", low=0, what="seed")
    check_count(s.completions, "completions", low=0, what="number of completions")
    check_count(s.samples, "samples", low=0, what="number of latent draws")
    if s.limit is not None:
        check_count(s.limit, "limit", what="number of items")
    check_method(s.method, s.options)
    if s.precision not in ("float32", "bfloat16"):
        raise CondVAEError(f"precision: expected float32 or bfloat16, got {s.precision!r}")
    precision = mixed_precision if s.precision == "bfloat16" else contextlib.nullcontext
    out = check_output_folder(out)
    distributed.setup(device)
    vae = from_pretrained(s.model, device=device)
    # what one chunk keeps, checked before any data is read or fit started
    per_item = 4 * math.prod(vae.data_shape)
    check_memory(s.chunk * s.completions * per_item, "completions", f"{s.completions} completions per query")
    check_memory(s.chunk * s.samples * 4 * vae.latent_dim, "samples", f"{s.samples} latent draws per query")
    x = _dataset(vae, s.dataset, data_dir, s.limit)
    masks = query_masks(s.mask, len(x), tuple(vae.data_shape), s.seed)
    if len(x) == 0:
        raise CondVAEError(f"dataset: {s.dataset} has no items")
    # the method built on the first query: option values are refused before anything is written
    METHODS[s.method](Query(vae, x[:1].to(vae.device), masks[:1].to(vae.device), s.seed), **s.options)
    chunks = -(-len(x) // s.chunk)
    _check_manifest(out, s, chunks)
    distributed.barrier()  # the folder and manifest exist before any rank writes a shard
    mine = [c for c in range(distributed.rank(), chunks, distributed.world())]
    started, written = time.perf_counter(), 0
    bar = tqdm(mine, disable=not progress or not distributed.is_main(), desc=f"{s.method} on {s.dataset}")
    for c in bar:
        path = out / SHARDS / f"{c:06d}.safetensors"
        lo, hi = c * s.chunk, min((c + 1) * s.chunk, len(x))
        discard_temp_files(path)
        if _done(path, hi - lo):
            continue  # written by an earlier run: not recomputed
        index = torch.arange(lo, hi)
        with precision():
            result = _chunk_result(vae, x[lo:hi].to(vae.device), masks[lo:hi].to(vae.device), index, s)
        atomic_save_tensors(path, result, {"chunk": str(c)})
        written += 1
    distributed.barrier()
    if distributed.is_main():
        manifest = json.loads((out / MANIFEST).read_text())
        missing = [c for c in range(chunks) if not (out / SHARDS / f"{c:06d}.safetensors").exists()]
        manifest.update(
            complete=not missing, queries=len(x), seconds_last_run=round(time.perf_counter() - started, 2)
        )
        atomic_write_bytes(out / MANIFEST, json.dumps(manifest, indent=2).encode())
    return out


def read_results(out: str | Path, allow_partial: bool = False) -> dict[str, Any]:
    """The shards of ``out`` as one dataset in query order: tensors with a leading query axis
    (``index``, ``mask``, ``completions``, ``z``, ``c_elbo``, ``diagnostics.*``) and ``settings``.
    An incomplete output is refused unless ``allow_partial``."""
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        raise CondVAEError(
            f"out: {str(out)!r} has no readable {MANIFEST}; is it a condition-dataset output?"
        ) from None
    if not manifest.get("complete") and not allow_partial:
        raise CondVAEError(f"out: {str(out)!r} is incomplete; rerun condition-dataset with the same settings")
    parts = [read_tensors(p)[0] for p in sorted((out / SHARDS).glob("*.safetensors"))]
    if not parts:
        raise CondVAEError(f"out: {str(out)!r} holds no shards yet")
    keys = set.intersection(*(set(p) for p in parts))
    merged: dict[str, Any] = {k: torch.cat([p[k] for p in parts]) for k in sorted(keys)}
    order = torch.argsort(merged["index"])
    merged = {k: v[order] for k, v in merged.items()}
    merged["settings"] = manifest["settings"]
    return merged


__all__ = ["Settings", "condition_dataset", "query_masks", "read_results"]
