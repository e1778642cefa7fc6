"""The models a server may use, each loaded once and shared by every request.

Only names are accepted from a client: bundled VAEs (or the subset the operator lists) and the
operator's own ``extra`` directories. A client can never make the server open a path.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from condvae import store
from condvae.app.config import ServeConfig
from condvae.data.binarize import fixed_binarize
from condvae.data.tables import load_table
from condvae.design.api import Problem, problem
from condvae.errors import CondVAEError, DataError
from condvae.evaluate import load_model_dataset
from condvae.models import VAE
from condvae.partial.encoder import PartialEncoder
from condvae.partial.ipa import resolve_encoder
from condvae.partial.pretrained import find_bundled

EXAMPLES = 12


class ModelBank:
    """Name -> a loaded VAE (and its design problem, its example items), loaded on first use."""

    def __init__(self, config: ServeConfig) -> None:
        bundled = store.bundled(store.VAES)
        names = list(config.models) or bundled
        unknown = [n for n in names if n not in bundled]
        if unknown:
            raise CondVAEError(f"models: {unknown} are not bundled models; expected names from {bundled}")
        self.sources: dict[str, str] = {n: n for n in names} | dict(config.extra)
        self.data_dir, self.device = config.data_dir, config.device
        self._vaes: dict[str, VAE] = {}
        self._problems: dict[str, Problem] = {}
        self._examples: dict[str, dict[str, Any]] = {}
        self._infos: dict[str, dict[str, Any]] = {}
        self._encoders: dict[str, PartialEncoder] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    def check(self, name: object) -> str:
        if not isinstance(name, str) or name not in self.sources:
            raise LookupError(f"model: unknown {name!r}; expected one of {self.names}")
        return name

    def vae(self, name: str) -> VAE:
        name = self.check(name)
        with self._lock:  # one load per model, however many requests ask at once
            if name not in self._vaes:
                vae = store.from_pretrained(self.sources[name], device=self.device)
                vae.eval()
                self._vaes[name] = vae
            return self._vaes[name]

    def problem(self, name: str) -> Problem:
        vae = self.vae(name)
        with self._lock:
            if name not in self._problems:
                self._problems[name] = problem(vae, data_dir=self.data_dir)
            return self._problems[name]

    def is_table(self, name: str) -> bool:
        return len(self.vae(name).data_shape) == 1

    def encoder(self, name: str) -> PartialEncoder:
        """The bundled partial encoder of a model (for ipa, semi, ipa-sir), loaded once."""
        vae = self.vae(name)
        with self._lock:
            if name not in self._encoders:
                self._encoders[name] = resolve_encoder(vae, None)
            return self._encoders[name]

    def info(self, name: str) -> dict[str, Any]:
        """What the page needs to draw a model's controls."""
        vae = self.vae(name)
        if name in self._infos:
            return self._infos[name]
        card = getattr(vae, "card", None) or {}
        out: dict[str, Any] = {
            "name": name,
            "kind": "table" if self.is_table(name) else "image",
            "data_shape": list(vae.data_shape),
            "latent_dim": int(vae.latent_dim),
            "likelihood": getattr(vae.likelihood, "name", type(vae.likelihood).__name__),
            "dataset": card.get("dataset"),
            "description": card.get("description", ""),
            "partial_encoder": find_bundled(vae) is not None,
        }
        if out["kind"] == "table":
            out["columns"] = [
                {k: c[k] for k in ("name", "kind", "values") if k in c}
                for c in vae.columns  # type: ignore[attr-defined]
            ]
        self._infos[name] = out
        return out

    def examples(self, name: str) -> dict[str, Any]:
        """A few test items in the model's own form (binary images for a Bernoulli model, raw units
        for a table), or, where the dataset is not on this machine, decoded draws of the model."""
        vae = self.vae(name)
        with self._lock:
            if name in self._examples:
                return self._examples[name]
        dataset = (getattr(vae, "card", None) or {}).get("dataset")
        source, items = f"{dataset}: test split", None
        try:
            if dataset is None:
                raise DataError("the model does not record its dataset")
            if self.is_table(name):
                items = torch.as_tensor(load_table(dataset, "test").x[:EXAMPLES], dtype=torch.float32)
            else:
                items = load_model_dataset(vae, dataset, "test", self.data_dir).x[:EXAMPLES]
                if getattr(vae.likelihood, "name", "") == "bernoulli":
                    items = fixed_binarize(items)
        except (DataError, CondVAEError, OSError):
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the same examples at every start
                p = vae.decode(vae.prior.sample((EXAMPLES,)))
                items = p.mean.cpu() if self.is_table(name) else p.mean.clamp(0, 1).cpu()
                if self.is_table(name):
                    items = vae.from_model(items)  # type: ignore[operator]
                elif getattr(vae.likelihood, "name", "") == "bernoulli":
                    items = (items > 0.5).float()
            source = f"draws of the model ({dataset or 'its data'} is not on this server)"
        found = {"source": source, "items": items}
        with self._lock:
            self._examples[name] = found
        return found
