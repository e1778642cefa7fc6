"""Test scores in nats per image: ELBO and importance-weighted NLL.

    IW-NLL_k(x) = -log (1/k) sum_{i=1..k} p(x | z_i) p(z_i) / q(z_i | x),   z_i ~ q(z | x)

(Burda et al. 2016): an upper bound on -log p(x) that tightens as k grows; k = 5000 is the
usual reporting setting. Computed in chunks so that memory stays bounded: a batch of images
and ``chunk`` samples each go through the decoder at once, and the chunks are combined with
a running log-sum-exp.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from condvae.data import ImageData, fixed_binarize, load_dataset, load_image
from condvae.data.tables import is_table_name, load_table
from condvae.errors import CondVAEError
from condvae.models import VAE
from condvae.streams import seeded


@torch.no_grad()
def iw_log_likelihood(model: VAE, x: torch.Tensor, k: int, chunk: int = 500) -> torch.Tensor:
    """log p(x) estimated with k importance samples from the encoder, ``[B]``."""
    if k < 1:
        raise CondVAEError(f"k: expected a positive number of importance samples, got {k}")
    q = model.encode(x)
    prior = model.prior
    total = torch.full((x.shape[0],), -math.inf, device=x.device)
    chunk = max(1, min(chunk, 2**25 // max(1, x.numel())))  # decoded draws held at once: ~128 MB
    for start in range(0, k, chunk):
        z = q.sample((min(chunk, k - start),))
        log_w = model.log_likelihood(x, z) + prior.log_prob(z) - q.log_prob(z)
        total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
    return total - math.log(k)


@torch.no_grad()
def evaluate(
    model: VAE,
    x: torch.Tensor,
    k: int = 5000,
    batch_size: int | None = None,
    chunk: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Mean ELBO (one z per image) and IW-NLL with k samples over the images ``x`` as given."""
    for name, value in (("k", k), ("batch_size", batch_size), ("chunk", chunk)):
        if value is not None and value < 1:
            raise CondVAEError(f"{name}: expected a positive integer, got {value}")
    model.eval()
    model.check_x(x, "x")
    chunk = chunk or min(k, 500)
    # Keep a decoder call near 100k (image, sample) pairs: enough to be efficient on CPU.
    batch_size = batch_size or max(1, min(len(x), 100_000 // chunk))
    elbo_sum, nll_sum = 0.0, 0.0
    started = time.perf_counter()
    with seeded(seed, model.device):
        batches = range(0, len(x), batch_size)
        for start in tqdm(batches, disable=not progress, desc=f"evaluate k={k}"):
            batch = x[start : start + batch_size].to(model.device)
            elbo_sum += float(model.elbo(batch).sum())
            nll_sum -= float(iw_log_likelihood(model, batch, k, chunk).sum())
    n = len(x)
    return {
        "images": n,
        "k": k,
        "elbo": elbo_sum / n,
        "iw_nll": nll_sum / n,
        "seconds": time.perf_counter() - started,
    }


def load_model_dataset(model: VAE, dataset: str, split: str, data_dir: str | None) -> ImageData:
    """A dataset split shaped for ``model`` (folder datasets are resized to its image size; a
    table's split is mapped to a tabular model's space)."""
    if is_table_name(dataset) and hasattr(model, "to_model"):
        table = load_table(dataset, split)
        return ImageData(model.to_model(table.x, "dataset"), None, table.name, split)  # type: ignore[operator]
    if dataset.startswith("folder:"):
        size = (model.data_shape[-2], model.data_shape[-1])
        return load_dataset(dataset, split, data_dir, size=size, channels=model.data_shape[0])
    return load_dataset(dataset, split, data_dir)


def _trained_on(model: VAE) -> str:
    return str((getattr(model, "card", None) or {}).get("dataset", "unknown data"))


def load_query_image(model: VAE, spec: str, data_dir: str | None = None) -> torch.Tensor:
    """``dataset:split:index`` or an image file, as the model sees it ``[1, *data_shape]``."""
    if ":" in spec and not Path(spec).exists():
        parts = spec.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise CondVAEError(f"image: expected dataset:split:index or a PNG/JPEG file, got {spec!r}")
        data = load_model_dataset(model, parts[0], parts[1], data_dir)
        index = int(parts[2])
        if index >= len(data):
            raise CondVAEError(
                f"image: index {index} is past the {len(data)} images of {parts[0]}:{parts[1]}"
            )
        x = data.x[index : index + 1]
        if tuple(x.shape[1:]) != tuple(model.data_shape):
            shown = "x".join(map(str, x.shape[-2:])) if x.dim() == 4 else str(list(x.shape[1:]))
            raise CondVAEError(
                f"image: {parts[0]} items are {shown}, this model takes "
                f"{'x'.join(map(str, model.data_shape[-2:]))} (trained on {_trained_on(model)})"
            )
    else:
        if not Path(spec).is_file():
            raise CondVAEError(f"image: {spec!r} is not a file nor dataset:split:index")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(spec) as img:
                size = (img.height, img.width)
                img.load()  # a truncated file fails here, not later
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            kind = "empty" if Path(spec).stat().st_size == 0 else "not a readable image"
            raise CondVAEError(f"image: {spec!r} is {kind}; expected a PNG or JPEG ({exc})") from None
        expected = model.data_shape[-2:]
        if size != tuple(expected):
            raise CondVAEError(
                f"image: {spec!r} is {size[0]}x{size[1]}, the model expects {expected[0]}x{expected[1]}"
            )
        x = torch.from_numpy(load_image(spec, size, model.data_shape[0])).float()[None] / 255
    if getattr(getattr(model, "likelihood", None), "name", None) == "bernoulli":
        x = fixed_binarize(x)
    return x


def evaluate_dataset(
    model: VAE,
    dataset: str | None = None,
    split: str = "test",
    k: int = 5000,
    limit: int | None = None,
    batch_size: int | None = None,
    chunk: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """:func:`evaluate` on a named dataset split (the model's own dataset by default).

    Bernoulli models are scored on the fixed seeded binarisation of the grey images
    (``condvae.data.fixed_binarize``), so every run sees the same binary test set.
    """
    card = getattr(model, "card", {}) or {}
    dataset = dataset or card.get("dataset")
    if not dataset:
        raise CondVAEError("dataset: this model does not say what it was trained on; pass --dataset")
    data = load_model_dataset(model, dataset, split, data_dir)
    if data.data_shape != model.data_shape:
        raise CondVAEError(
            f"dataset: {dataset!r} images are {list(data.data_shape)}, "
            f"the model expects {list(model.data_shape)}"
        )
    if limit is not None and limit < 1:
        raise CondVAEError(f"limit: expected a positive number of images, got {limit}")
    x = data.x[:limit] if limit else data.x
    if model.likelihood.name == "bernoulli":
        x = fixed_binarize(x)
    scores = evaluate(model, x, k=k, batch_size=batch_size, chunk=chunk, seed=seed, progress=progress)
    return {"dataset": dataset, "split": split, **scores}  # type: ignore[dict-item]
