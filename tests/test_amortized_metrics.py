"""Coverage, diversity and the Fréchet distance against hand-computed answers; the classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_classifiers import accuracy, train_classifier

from condvae.classifier import load_classifier
from condvae.errors import CondVAEError
from condvae.metrics import coverage, diversity, frechet_distance


def test_coverage_is_the_best_completion_on_hidden_pixels() -> None:
    x = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[True, False], [False, False]]]])  # 3 hidden pixels
    completions = torch.stack(
        [
            torch.full((1, 1, 2, 2), 1.0),  # RMS 1 on the hidden pixels
            torch.tensor([[[[9.0, 0.5], [0.5, 0.5]]]]),  # RMS 0.5 (the observed 9 is ignored)
        ]
    )
    assert torch.allclose(coverage(completions, x, mask), torch.tensor([0.5]))
    # diversity: one pair, RMS distance 0.5 on the hidden pixels
    assert torch.allclose(diversity(completions, mask), torch.tensor([0.5]))
    with pytest.raises(CondVAEError, match="completions"):
        coverage(completions[:, 0], x, mask)
    with pytest.raises(CondVAEError, match="at least 2"):
        diversity(completions[:1], mask)


def test_frechet_distance_matches_the_gaussian_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=gen)
    b = torch.randn(20000, 3, generator=gen) * 2 + torch.tensor([1.0, 0.0, 0.0])
    # N(0, I) vs N(e1, 4I): |mu|^2 + tr(I + 4I - 2 * 2I) = 1 + 3
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.15)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(CondVAEError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_classifier_trains_saves_and_loads(synthetic_data: Path, tmp_path: Path) -> None:
    data_dir = str(synthetic_data)
    model = train_classifier("mnist", tmp_path / "clf", epochs=1, data_dir=data_dir, progress=False)
    back = load_classifier(tmp_path / "clf")
    x = torch.rand(5, 1, 28, 28)
    assert back.features(x).shape == (5, 128) and back(x).shape == (5, 10)
    torch.testing.assert_close(back(x), model.eval()(x))
    assert "test accuracy" in next(iter(back.card["metrics"]))
    with pytest.raises(CondVAEError, match="no classifier"):
        load_classifier(tmp_path / "nope")


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_bundled_classifiers_are_accurate(real_data: Path, dataset: str) -> None:
    from condvae.data import load_dataset

    clf = load_classifier(dataset)
    test = load_dataset(dataset, "test", real_data)
    assert accuracy(clf, test.x[:2000], test.labels[:2000]) > (0.97 if dataset == "mnist" else 0.85)
