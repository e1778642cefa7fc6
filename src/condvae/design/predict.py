"""What design predicts after each step: the class of an image, or a table's target.

- ``ClassPrediction``: the partial-image classifier on the evidence, g(c | x_o), and its average
  over the completions, mean_n g(c | x_hat_n);
- ``TargetPrediction``: the target's posterior under the conditioned VAE, in raw units: for a
  continuous target its mean and a central interval from the completions; for a discrete one
  the class probabilities mean_n p(y = k | z_n), exact given each draw z_n, and the likeliest.
"""

from __future__ import annotations

import torch

from condvae.design.completions import Completions
from condvae.errors import CondVAEError
from condvae.models import VAE


class ClassPrediction:
    def __init__(self, classifier: torch.nn.Module) -> None:
        self.classifier = classifier

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, mask: torch.Tensor, completions: Completions
    ) -> dict[str, torch.Tensor]:
        fill = completions.fill
        seen = torch.ones_like(fill, dtype=torch.bool)
        return {
            "probs": self.classifier(x, mask).softmax(-1),
            "probs_completed": self.classifier(fill, seen).softmax(-1).mean(1),
        }


class TargetPrediction:
    """The target column ``index`` of a flat model; ``level`` is the interval's coverage."""

    def __init__(self, vae: VAE, index: int, level: float = 0.9) -> None:
        self.vae, self.index, self.level = vae, index, level
        columns = getattr(vae, "columns", None)
        spec = columns[index] if columns else {"kind": "gaussian"}
        self.values: list[float] = [] if spec["kind"] == "gaussian" else [float(v) for v in spec["values"]]

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Model space to the table's units (a model without a scaler is its own unit)."""
        from_model = getattr(self.vae, "from_model", None)
        return (from_model(x) if from_model is not None else x.double())[..., self.index]

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, mask: torch.Tensor, completions: Completions
    ) -> dict[str, torch.Tensor]:
        if completions.z is None:
            raise CondVAEError("predict: a target prediction needs completions from a conditioning method")
        p = self.vae.decode(completions.z)
        if self.values:  # model space holds a discrete column as its code 0..K-1
            filled = completions.fill.transpose(0, 1)  # [N, B, D]
            log_p = []
            for k in range(len(self.values)):
                value = filled.clone()
                value[..., self.index] = float(k)
                log_p.append(p.log_prob(value)[..., self.index])
            probs = torch.stack(log_p, -1).softmax(-1).mean(0).cpu()  # mean over draws of p(y = k | z)
            return {"target_probs": probs, "target_class": torch.tensor(self.values)[probs.argmax(-1)]}
        draws = self.raw(completions.fill.cpu())  # [B, N]
        tail = (1 - self.level) / 2
        quantiles = torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=draws.dtype), dim=1)
        return {
            "target_mean": self.raw(p.mean.cpu()).mean(0),
            "target_low": quantiles[0],
            "target_high": quantiles[1],
        }
