"""Experimental design: the EIG estimators against known answers, the greedy loop, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import condvae
from condvae.classifier import PartialClassifier, load_partial_classifier, save_classifier
from condvae.design import ClassifierEIG, LatentEIG, design, features, patch_grid, problem
from condvae.design.eig import class_eig, entropy
from condvae.design.greedy import unseen
from condvae.errors import CondVAEError
from condvae.masks import sample_masks
from condvae.models.linear_gaussian import LinearGaussianVAE


def switch_classifier() -> PartialClassifier:
    """g(c | x_o) on 2x2 images: pixel 0 decides the class when seen (class = its value); unseen,
    the classes are equally likely; the other pixels are ignored."""
    g = PartialClassifier((1, 2, 2), classes=2, hidden=(2,), dataset="toy")
    with torch.no_grad():
        g.first.weight.zero_()
        g.first.bias.zero_()
        g.first.weight[0, 0] = 1.0  # relu(x0 m0): pixel 0 seen and 1
        g.first.weight[1, 4], g.first.weight[1, 0] = 1.0, -1.0  # relu(m0 - x0 m0): seen and 0
        g.rest[1].weight.copy_(torch.tensor([[0.0, 30.0], [30.0, 0.0]]))
        g.rest[1].bias.zero_()
    return g


class Plain(torch.nn.Module):
    """The same classifier without its fast path: design runs it on each completed image."""

    def __init__(self, g: PartialClassifier) -> None:
        super().__init__()
        self.g, self.classes = g, g.classes

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.g(x, mask)


def toy_fill(batch: int, n: int, p_one: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    fill = torch.rand(batch, n, 1, 2, 2, generator=gen)
    fill[:, :, 0, 0, 0] = (torch.rand(batch, n, generator=gen) < p_one).float()
    return fill


@pytest.mark.parametrize("fast", [True, False], ids=["glimpse_logits", "plain"])
def test_classifier_eig_known_answers(fast: bool) -> None:
    g = switch_classifier()
    eig = ClassifierEIG(g if fast else Plain(g))
    cands = patch_grid((1, 2, 2), 1)  # one pixel each, pixel 0 first
    x, n, p_one = torch.zeros(3, 1, 2, 2), 4000, 0.3
    mask = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    mask[2, 0, 0, 0] = True  # item 2 has already seen pixel 0
    fill = toy_fill(3, n, p_one)
    fill[2] = torch.where(mask[2], x[2], fill[2])
    gains = eig(x, mask, fill, cands)
    share = fill[:, :, 0, 0, 0].mean(1)  # the completions' own frequency of class 1
    h = -(share * share.log() + (1 - share) * (1 - share).log())
    # the deciding pixel is worth H[c | x_o] under the completions (here within 1e-6 of exact)
    assert gains[:2, 0] == pytest.approx(h[:2], abs=1e-5)
    assert abs(float(gains[0, 0]) - (-(0.3 * math.log(0.3) + 0.7 * math.log(0.7)))) < 0.01  # MC error
    # pixels the class does not depend on, and a pixel already seen, are worth nothing
    assert gains[:2, 1:].abs().max() < 1e-6
    assert gains[2].abs().max() < 1e-6
    # and H[c | x_o] is what the classifier says about the completed images, on average
    completed = g(fill[0], torch.ones_like(fill[0], dtype=torch.bool)).detach().softmax(-1).mean(0)
    assert float(gains[0, 0]) == pytest.approx(float(entropy(completed)), abs=1e-5)


def test_glimpse_logits_equal_the_classifier_on_each_completed_image() -> None:
    torch.manual_seed(0)
    g = PartialClassifier((2, 6, 5), classes=3, hidden=(16, 8))
    x, mask = torch.rand(3, 2, 6, 5), torch.rand(3, 1, 6, 5).expand(3, 2, 6, 5) < 0.3
    fill = torch.rand(3, 4, 2, 6, 5)
    cands = patch_grid((2, 6, 5), 2)  # overlapping last row and column
    fast = g.glimpse_logits(x, mask, fill, cands.indices)
    shown = mask[:, None, None] | cands.masks[None, None]
    slow = g(
        torch.where(mask[:, None, None], x[:, None, None], fill[:, :, None]),
        shown.expand(3, 4, -1, -1, -1, -1),
    )
    assert fast.shape == (3, 4, len(cands), 3)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_class_eig_is_never_negative_and_zero_for_agreeing_completions() -> None:
    probs = torch.rand(5, 7, 3, 4).softmax(-1)
    assert (class_eig(probs, 1) >= 0).all()
    same = probs[:, :1].expand(-1, 7, -1, -1)
    assert class_eig(same, 1).abs().max() < 1e-6


def linear_gaussian_setup(
    seed: int = 0,
) -> tuple[LinearGaussianVAE, torch.Tensor, torch.Tensor, torch.Tensor]:
    vae = LinearGaussianVAE.random(7, 3, noise=0.5, seed=seed)
    x = vae.decode(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed))).mean
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, 0], mask[1, [0, 2]] = True, True
    target = torch.zeros(7, dtype=torch.bool)
    target[6] = True
    return vae, x, mask, target


def exact_fill(vae: LinearGaussianVAE, x: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """Exact draws of p(x | x_o), the evidence pasted in."""
    mean, cov = vae.conditional(x, mask)
    chol = torch.linalg.cholesky(cov + 1e-6 * torch.eye(cov.shape[-1]))
    eps = torch.randn(x.shape[0], n, x.shape[1], generator=torch.Generator().manual_seed(1))
    draws = mean[:, None] + torch.einsum("bij,bnj->bni", chol, eps)
    return torch.where(mask[:, None], x[:, None], draws)


@torch.no_grad()
def test_latent_eig_equals_the_closed_form_mutual_information() -> None:
    """EDDI's two-KL estimator towards a target y equals I(x_i; y | x_o), and without a target
    I(z; x_i | x_o) = (log det Cov(z | x_o) - log det Cov(z | x_o, x_i)) / 2: on the
    linear-Gaussian model both are closed forms. Tolerance 0.02 nats + 3% (Monte Carlo over
    20000 exact completions: about 4 standard errors)."""
    vae, x, mask, target = linear_gaussian_setup()
    cands = features([f"x{i}" for i in range(7)], ["x6"])
    fill = exact_fill(vae, x, mask, 20000)
    to_y = LatentEIG(vae.posterior, target)(x, mask, fill, cands)
    about_z = LatentEIG(vae.posterior)(x, mask, fill, cands)
    _, cov = vae.conditional(x, mask)
    for b in range(3):
        before = torch.logdet(vae.posterior(x[b : b + 1], mask[b : b + 1]).covariance_matrix[0])
        for i in range(6):
            if mask[b, i]:
                assert abs(float(to_y[b, i])) < 1e-5 and abs(float(about_z[b, i])) < 1e-5
                continue
            pair = cov[b][[i, 6]][:, [i, 6]]
            mi_y = 0.5 * math.log(float(pair[0, 0] * pair[1, 1] / torch.linalg.det(pair)))
            after = torch.logdet(
                vae.posterior(x[b : b + 1], mask[b : b + 1] | cands.masks[i]).covariance_matrix[0]
            )
            mi_z = 0.5 * float(before - after)
            assert float(to_y[b, i]) == pytest.approx(mi_y, abs=0.02, rel=0.03), (b, i)
            assert float(about_z[b, i]) == pytest.approx(mi_z, abs=0.02, rel=0.03), (b, i)


def test_latent_eig_of_an_item_does_not_depend_on_its_batch() -> None:
    vae, x, mask, target = linear_gaussian_setup()
    cands = features([f"x{i}" for i in range(7)], ["x6"])
    fill = exact_fill(vae, x, mask, 50)
    eig = LatentEIG(vae.posterior, target)
    together = eig(x, mask, fill, cands)
    alone = torch.cat([eig(x[b : b + 1], mask[b : b + 1], fill[b : b + 1], cands) for b in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_greedy_design_takes_the_most_informative_feature_first() -> None:
    """On the linear-Gaussian model, step 1 of EIG design picks argmax_i I(x_i; y) (closed form)
    wherever the best feature leads the runner-up by a clear margin; random never repeats."""
    vae, x, _, _ = linear_gaussian_setup(seed=3)
    prob = problem(vae, target="x6")
    result = design(prob, x, steps=3, strategy="gvi", completions=600, options={"steps": 300})
    _, cov = vae.conditional(x, torch.zeros_like(x, dtype=torch.bool))
    mi = torch.tensor(
        [
            0.5
            * math.log(float(cov[0, i, i] * cov[0, 6, 6] / (cov[0, i, i] * cov[0, 6, 6] - cov[0, i, 6] ** 2)))
            for i in range(6)
        ]
    )
    top = mi.topk(2)
    assert top.values[0] - top.values[1] > 0.05, "pick a seed with a clear best feature"
    assert (result.order[:, 0] == top.indices[0]).all(), (result.order, mi)
    assert result.predictions["target_mean"].shape == (3, 4)
    assert (result.predictions["target_low"] <= result.predictions["target_high"]).all()
    rand = design(prob, x, steps=6, strategy="random", completions=8)
    assert all(len(set(row.tolist())) == 6 for row in rand.order)
    assert torch.isnan(rand.gains).all()


def test_costs_steer_the_choice_and_sing_shares_one_order() -> None:
    vae, x, _, _ = linear_gaussian_setup(seed=3)
    quick = {"steps": 150}
    free = design(problem(vae, target="x6"), x, steps=1, strategy="gvi", completions=300, options=quick)
    best = int(free.order[0, 0])
    costs = [1.0] * 6
    costs[best] = 1e6
    taxed = design(
        problem(vae, target="x6", costs=costs), x, steps=1, strategy="gvi", completions=300, options=quick
    )
    assert (taxed.order[:, 0] != best).all()
    train = vae.decode(torch.randn(40, 3, generator=torch.Generator().manual_seed(5))).sample()
    sing = design(problem(vae, target="x6"), x, steps=3, strategy="sing", train=train, completions=50)
    assert (sing.order == sing.order[:1]).all()
    uncond = design(
        problem(vae, target="x6"), x, steps=2, strategy="unconditional", train=train, completions=50
    )
    assert (uncond.gains[:, 0] >= 0).all()


def test_unseen_marks_candidates_with_something_new() -> None:
    cands = patch_grid((1, 4, 4), 2)
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[0, :, :2, :2] = True
    mask[1, :, 0, 2] = True  # one pixel of the second patch: the rest is still new
    assert unseen(mask, cands).tolist() == [[False, True, True, True], [True, True, True, True]]


def test_glimpse_masks_are_unions_of_small_squares() -> None:
    masks = sample_masks("glimpses", 200, (1, 28, 28), torch.Generator().manual_seed(0))
    fraction = masks.float().mean((1, 2, 3))
    assert fraction.min() == 0 and 0 < fraction.mean() < 0.4
    assert masks[fraction > 0].any(-1).any(-1).all()


def test_partial_classifier_round_trips_and_refuses_a_whole_image_classifier(tmp_path: Path) -> None:
    g = switch_classifier()
    path = save_classifier(g, tmp_path / "clf")
    back = load_partial_classifier(path)
    x, mask = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2) < 0.5
    assert torch.equal(back(x, mask), g(x, mask)) and back.dataset == "toy"
    from condvae.classifier import SmallCNN

    save_classifier(SmallCNN((1, 8, 8), classes=3, width=16), tmp_path / "cnn")
    with pytest.raises(CondVAEError, match="classifier: .* reads whole images"):
        load_partial_classifier(tmp_path / "cnn")


def toy_image_vae(dataset: str = "mnist") -> condvae.models.VAE:
    vae = condvae.build_model(
        {"architecture": "mlp", "latent_dim": 2, "hidden": [16], "data_shape": [1, 8, 8]}
    )
    vae.card = {"dataset": dataset}
    return vae


def test_bad_input_is_one_line_naming_the_argument() -> None:
    vae = toy_image_vae()
    clf = PartialClassifier((1, 8, 8), 10, (8,), dataset="fashion_mnist")
    own = PartialClassifier((1, 8, 8), 10, (8,), dataset="mnist")
    x = torch.rand(2, 1, 8, 8).round()
    cases = [
        (lambda: problem(vae, patch=9, classifier=own), "patch: 9 is larger than the 8x8 image"),
        (lambda: problem(vae, classifier=clf), "classifier: it was trained on fashion_mnist"),
        (lambda: problem(vae, classifier=PartialClassifier((1, 9, 9), 10, (8,))), "classifier: it reads"),
        (lambda: design(vae, x, steps=5, patch=4, classifier=own), "steps: 5 is more than the 4 candidates"),
        (lambda: design(vae, torch.rand(2, 1, 9, 9), classifier=own), "x: expected items of shape"),
        (
            lambda: design(vae, x, steps=3, patch=4, classifier=own, mask=torch.rand(2, 1, 8, 8) < 2),
            "steps: 3 is more than the 0 candidates item 0 has not seen yet",
        ),
        (lambda: design(vae, x, strategy="best", classifier=own), "strategy: unknown 'best'"),
        (lambda: design(vae, x, steps=0, classifier=own), "steps:"),
        (lambda: design(vae, x, completions=0, classifier=own), "completions:"),
        (lambda: problem(vae, target="y", classifier=own), "target: images"),
        (lambda: problem(vae, costs=[1.0, 2.0], classifier=own), "costs: expected 64 costs"),
        (lambda: problem(vae, costs=[-1.0] * 64, classifier=own), "costs: expected positive"),
        (lambda: problem(vae, eig="psychic", classifier=own), "eig:"),
        (lambda: ClassifierEIG(own, decoded="median"), "decoded: expected 'mean' or 'sample'"),
    ]
    for call, message in cases:
        with pytest.raises(CondVAEError, match=message.replace("(", r"\(")):
            call()
    table = LinearGaussianVAE.random(5, 2)
    with pytest.raises(CondVAEError, match="target: 'colour' is not a column"):
        problem(table, target="colour")
    nan = torch.zeros(1, 5)
    nan[0, 1] = float("nan")
    with pytest.raises(CondVAEError, match="x: design reveals"):
        design(problem(table, target="x4"), nan, strategy="gvi")
    rows, setup = torch.randn(2, 5), problem(table, target="x4")
    more = [
        (dict(strategy="sing", order=[9, 1]), "order: expected at least 2 candidate indices"),
        (dict(seed="x"), "seed:"),
        (dict(strategy="unconditional", train=torch.randn(3, 4)), "train: expected training items"),
        (dict(mask=torch.zeros(3, 5, dtype=torch.bool)), "mask: expected a bool tensor"),
    ]
    for kwargs, message in more:
        with pytest.raises(CondVAEError, match=message):
            design(setup, rows, steps=2, completions=4, **kwargs)
    with pytest.raises(CondVAEError, match="classifier: expected a partial-image classifier"):
        problem(vae, classifier=5)


def test_design_on_a_toy_image_model_end_to_end() -> None:
    torch.manual_seed(0)
    vae = toy_image_vae()
    clf = PartialClassifier((1, 8, 8), 10, (8,), dataset="mnist")
    x = torch.rand(3, 1, 8, 8).round()
    result = design(
        vae, x, steps=3, patch=2, classifier=clf, strategy="gvi", options={"steps": 20}, completions=4
    )
    assert result.order.shape == (3, 3) and result.gains.shape == (3, 3, 16)
    assert all(len(set(row.tolist())) == 3 for row in result.order)  # never the same glimpse twice
    assert result.predictions["probs"].shape == (3, 4, 10)
    assert torch.allclose(result.predictions["probs"].sum(-1), torch.ones(3, 4))
    seen = result.mask_after(3)
    assert int(seen.sum()) == 3 * 3 * 4


@pytest.mark.parametrize("model", ["wine-tab-z4", "breast-cancer-tab-z4", "diabetes-tab-z4"])
def test_table_design_with_the_bundled_models(model: str) -> None:
    vae = condvae.load(model)
    rows = condvae.load_table(vae.card["dataset"], "test")
    x = vae.to_model(rows.x[:4])
    result = design(model, x, steps=2, completions=32)
    assert result.order.shape == (4, 2)
    assert "target" not in [result.candidates.names[int(c)] for c in result.order.flatten()]
    key = "target_probs" if "target_probs" in result.predictions else "target_mean"
    assert torch.isfinite(result.predictions[key]).all()


def test_gains_score_evidence_seen_in_the_field() -> None:
    vae, x, mask, _ = linear_gaussian_setup(seed=3)
    prob = problem(vae, target="x6")
    hidden = torch.where(mask, x, torch.full_like(x, float("nan")))  # unseen values are unknown
    scores = condvae.design.gains(prob, hidden, mask, method="gvi", completions=200)
    assert scores.shape == (3, 6) and (scores >= 0).all()
    assert (scores[mask[:, :6]] < 1e-5).all()  # what is seen is worth nothing


def test_cli_design_for_an_image_and_a_table_row(tmp_path: Path) -> None:
    import contextlib
    import io

    import numpy as np
    from PIL import Image

    from condvae.cli import main

    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(tmp_path / "digit.png")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(
            [
                "design",
                "--model",
                "mnist-mlp-z2",
                "--image",
                str(tmp_path / "digit.png"),
                "--steps",
                "2",
                "--out",
                str(tmp_path / "d.png"),
            ]
        )
        status += main(
            [
                "design",
                "--model",
                "wine-tab-z4",
                "--row",
                "wine+target:test:0",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "w.png"),
            ]
        )
    text = out.getvalue()
    assert status == 0, text
    assert text.count("step ") >= 5 and "EIG" in text and "target" in text
    assert (tmp_path / "d.png").stat().st_size > 0 and (tmp_path / "w.png").stat().st_size > 0


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_bundled_partial_classifiers_score_what_their_cards_say(real_data: Path, dataset: str) -> None:
    from condvae.data import load_dataset

    clf = load_partial_classifier(dataset)
    test = load_dataset(dataset, "test", real_data)
    x, labels = test.x[:2000], test.labels[:2000]
    with torch.no_grad():
        full = (clf(x, torch.ones_like(x, dtype=torch.bool)).argmax(-1) == labels).float().mean()
        none = clf(x, torch.zeros_like(x, dtype=torch.bool)).softmax(-1)
    card = clf.card["metrics"]["test accuracy, 100% random pixels observed"]
    assert abs(float(full) - card) < 0.02, (float(full), card)
    assert torch.allclose(none, none[:1].expand_as(none))  # nothing seen: one answer for all


def test_partial_classifier_trains_on_random_masks_and_reports_by_glimpses(
    synthetic_data: Path, tmp_path: Path
) -> None:
    from train_classifiers import train_partial_classifier

    model = train_partial_classifier(
        "mnist",
        tmp_path / "clf",
        epochs=1,
        data_dir=str(synthetic_data),
        progress=False,
        hidden=(32,),
        binarized=0.5,
    )
    back = load_partial_classifier(tmp_path / "clf")
    assert back.dataset == "mnist" and back.hidden == (32,)
    metrics = back.card["metrics"]
    assert {"test accuracy, 8 random 4x4 glimpses", "test accuracy, binarised, all observed"} <= set(metrics)
    assert all(0 <= v <= 1 for v in metrics.values())
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(back(x, x > 0.5), model(x, x > 0.5))


def test_items_with_the_same_evidence_share_one_estimate() -> None:
    from condvae.design.completions import Completions
    from condvae.design.greedy import EIGChooser

    g, cands = switch_classifier(), patch_grid((1, 2, 2), 1)
    x, mask = torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2, dtype=torch.bool)
    x[3, 0, 0, 1], mask[3, 0, 0, 1] = 1.0, True  # item 3 has seen something; 0-2 nothing
    fill = toy_fill(4, 50, 0.3)
    eig = ClassifierEIG(g)
    gains = EIGChooser(eig, cands).gains(x, mask, Completions(fill, None), 0)
    pooled = eig(x[:1], mask[:1], fill[:3].reshape(1, 150, 1, 2, 2), cands)
    assert torch.allclose(gains[:3], pooled.expand(3, -1), atol=1e-6)
    assert torch.allclose(gains[3:], eig(x[3:], mask[3:], fill[3:], cands), atol=1e-6)
