"""Completion pictures: method headers over groups of columns (the demo's picture), and errors."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from condvae.errors import CondVAEError
from condvae.plotting import completions_figure, save_completions


def _queries(n: int = 8, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binary images with the top half observed and ``n`` completions each."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 1, 28, 28, generator=gen) > 0.5).float()
    mask = torch.zeros_like(x)
    mask[..., :14, :] = 1
    return x, mask, torch.rand(n, batch, 1, 28, 28, generator=gen)


def _header_texts(fig: plt.Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_groups_write_a_png(tmp_path) -> None:
    x, mask, completions = _queries()
    path = save_completions(x, mask, completions, tmp_path / "sub" / "demo.png", groups=["gvi", "planar"])
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert 5_000 < len(data) < 2_000_000


def test_groups_are_headers_over_their_columns() -> None:
    x, mask, completions = _queries()
    fig = completions_figure(x, mask, completions, groups=["gvi", "planar"])
    try:
        fig.canvas.draw()  # headers are placed at draw time
        headers = {t.get_text(): t for ax in fig.axes for t in ax.texts}
        assert set(headers) == {"evidence", "truth", "gvi", "planar"}
        # each name is centred over its 4 columns: between the first and last column's centres
        images = sorted((ax for ax in fig.axes if ax.images), key=lambda ax: ax.get_position().x0)
        columns = sorted({round(ax.get_position().x0, 4) for ax in images})
        assert len(columns) == 2 + 8
        renderer = fig.canvas.get_renderer()
        gvi = headers["gvi"].get_window_extent(renderer)
        planar = headers["planar"].get_window_extent(renderer)
        width = fig.bbox.width
        assert columns[2] < gvi.x0 / width and gvi.x1 / width < columns[6]
        assert columns[6] < planar.x0 / width
    finally:
        plt.close(fig)


def test_without_groups_no_headers() -> None:
    x, mask, completions = _queries()
    fig = completions_figure(x, mask, completions, labels=["first", "second"])
    try:
        assert _header_texts(fig) == []
        assert {ax.get_ylabel() for ax in fig.axes} >= {"first", "second"}
    finally:
        plt.close(fig)


def test_groups_without_truth() -> None:
    x, mask, completions = _queries(n=6)
    fig = completions_figure(x, mask, completions, truth=False, groups=["a", "b", "c"])
    try:
        assert _header_texts(fig) == ["evidence", "a", "b", "c"]
    finally:
        plt.close(fig)


@pytest.mark.parametrize("groups", [["gvi", "planar", "mixture"], []])
def test_groups_must_divide_the_completions(tmp_path, groups: list[str]) -> None:
    x, mask, completions = _queries(n=8)
    with pytest.raises(CondVAEError, match=r"^groups: .*8 completions") as error:
        save_completions(x, mask, completions, tmp_path / "bad.png", groups=groups)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "bad.png").exists()
