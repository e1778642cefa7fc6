"""The mask library: every spec, seeding, the mixture's spread, PNG masks and bad specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from condvae.errors import CondVAEError
from condvae.masks import MIXTURE_KINDS, make_mask, sample_masks

SHAPE = (1, 28, 28)


@pytest.mark.parametrize(
    "spec",
    [
        "random:0.3",
        "random",
        "box",
        "box:2,3,10,12",
        "band:4,9",
        "top-half",
        "half",
        "quadrant:br",
        "quadrant",
        "freeform",
        "mixture",
        "~freeform",
        "~box:2,3,10,12",
    ],
)
def test_every_spec_gives_a_seeded_bool_mask(spec: str) -> None:
    a, b = make_mask(spec, SHAPE, seed=5), make_mask(spec, SHAPE, seed=5)
    assert a.shape == SHAPE and a.dtype == torch.bool
    assert torch.equal(a, b)


def test_fixed_shapes() -> None:
    box = make_mask("box:2,3,10,12", SHAPE)
    assert box.sum() == 8 * 9 and box[0, 2, 3] and not box[0, 10, 12]
    assert torch.equal(make_mask("~box:2,3,10,12", SHAPE), ~box)
    q = make_mask("quadrant:br", SHAPE)
    assert q.sum() == 14 * 14 and q[0, 27, 27] and not q[0, 0, 0]
    assert (
        make_mask("left-half", (3, 8, 8))[:, :, :4].all()
        and not make_mask("left-half", (3, 8, 8))[:, :, 4:].any()
    )


def test_random_kinds_vary_across_the_batch_and_seed() -> None:
    for kind in ("random", "box", "half", "quadrant", "freeform"):
        m = sample_masks(kind, 64, SHAPE, torch.Generator().manual_seed(0))
        assert m.shape == (64, *SHAPE)
        assert len({tuple(x.flatten().tolist()) for x in m}) > 3, kind
        again = sample_masks(kind, 64, SHAPE, torch.Generator().manual_seed(0))
        assert torch.equal(m, again)


def test_freeform_hides_strokes() -> None:
    m = sample_masks("freeform", 500, SHAPE, torch.Generator().manual_seed(1))
    hidden = 1 - m.float().flatten(1).mean(1)
    assert (hidden > 0).all() and 0.05 < float(hidden.mean()) < 0.5


def test_mixture_spreads_the_observed_fraction_over_0_1() -> None:
    m = sample_masks("mixture", 4000, SHAPE, torch.Generator().manual_seed(2))
    frac = m.float().flatten(1).mean(1)
    counts = torch.histc(frac, bins=5, min=0, max=1)
    assert (counts > 0.08 * len(frac)).all(), counts  # every fifth of [0, 1] is well represented
    assert len(MIXTURE_KINDS) >= 6


def test_channels_share_a_pixel_mask() -> None:
    m = sample_masks("mixture", 8, (3, 16, 16), torch.Generator().manual_seed(3))
    assert (m == m[:, :1]).all()


def test_feature_vectors_take_random_masks() -> None:
    m = sample_masks("mixture", 100, (8,), torch.Generator().manual_seed(4))
    assert m.shape == (100, 8)
    with pytest.raises(CondVAEError, match="image-shaped"):
        make_mask("box", (8,))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("random:2", "P in"),
        ("box:1,2", "4 comma"),
        ("box:0,0,40,40", "outside"),
        ("quadrant:xx", "quadrant:Q"),
        ("blob", "unknown spec"),
        ("band:5,2", "outside"),
    ],
)
def test_bad_specs_are_named(spec: str, match: str) -> None:
    with pytest.raises(CondVAEError, match=match):
        make_mask(spec, SHAPE)
    with pytest.raises(CondVAEError, match="not a random kind"):
        sample_masks("box:1,1,3,3", 2, SHAPE)


def test_png_masks(tmp_path: Path) -> None:
    array = np.zeros((28, 28), dtype=np.uint8)
    array[:10] = 255
    Image.fromarray(array).save(tmp_path / "ok.png")
    m = make_mask(str(tmp_path / "ok.png"), SHAPE)
    assert m[0, :10].all() and not m[0, 10:].any()
    Image.fromarray(array[:20]).save(tmp_path / "small.png")
    with pytest.raises(CondVAEError, match="is 20x28, the image is 28x28"):
        make_mask(str(tmp_path / "small.png"), SHAPE)
    grey = array.copy()
    grey[5, 5] = 128
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with pytest.raises(CondVAEError, match=r"black \(0\) and white \(255\) only"):
        make_mask(str(tmp_path / "grey.png"), SHAPE)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(CondVAEError, match="cannot read"):
        make_mask(str(tmp_path / "junk.png"), SHAPE)
