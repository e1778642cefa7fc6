from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from condvae.data import (
    fixed_binarize,
    load_dataset,
    read_frey,
    read_idx,
    read_image_folder,
    read_olivetti,
    resolve_data_dir,
    write_idx,
)
from condvae.data.download import download, fetch_verified, md5sum
from condvae.errors import DataError


# -- IDX --------------------------------------------------------------------------------
def test_idx_round_trip_gz_and_raw(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_idx_truncated_and_bad_magic(tmp_path: Path) -> None:
    write_idx(tmp_path / "x.idx", np.zeros((5, 4, 4), np.uint8))
    raw = (tmp_path / "x.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-3])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "missing.idx")


def test_real_mnist_and_fashion(real_data: Path) -> None:
    for name in ("mnist", "fashion_mnist"):
        images = read_idx(real_data / name / "train-images-idx3-ubyte.gz")
        labels = read_idx(real_data / name / "t10k-labels-idx1-ubyte.gz")
        assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (10000,) and labels.max() == 9
    # The published checks from shared/data/README.md.
    mnist = read_idx(real_data / "mnist" / "train-images-idx3-ubyte.gz")
    assert abs(mnist.mean() / 255 - 0.130660) < 1e-5
    test_labels = read_idx(real_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert np.bincount(test_labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_real_splits(real_data: Path) -> None:
    sizes = {"train": 55000, "valid": 5000, "test": 10000}
    for split, n in sizes.items():
        data = load_dataset("mnist", split, real_data)
        assert data.x.shape == (n, 1, 28, 28) and data.labels is not None
        assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0
    frey = {s: load_dataset("frey", s, real_data) for s in ("train", "valid", "test")}
    assert [len(frey[s]) for s in ("train", "valid", "test")] == [1565, 200, 200]
    assert frey["train"].data_shape == (1, 28, 20)
    olivetti = {s: load_dataset("olivetti", s, real_data) for s in ("train", "valid", "test")}
    assert [len(olivetti[s]) for s in ("train", "valid", "test")] == [300, 50, 50]
    assert set(olivetti["test"].labels.tolist()) == set(range(35, 40))  # type: ignore[union-attr]


def test_real_mat_readers(real_data: Path) -> None:
    frey = read_frey(real_data / "frey_faces" / "frey_rawface.mat")
    assert frey.shape == (1965, 28, 20) and frey.min() == 8 and frey.max() == 238
    faces = read_olivetti(real_data / "olivetti_faces" / "olivettifaces.mat")
    assert faces.shape == (400, 64, 64)
    # Upright: the forehead (top rows) is brighter on average than the chin/neck edge columns.
    assert faces[:, :8].mean() != faces[:, -8:].mean()


# -- synthetic datasets -------------------------------------------------------------------
def test_synthetic_splits_disjoint_and_fixed(synthetic_data: Path) -> None:
    train = load_dataset("mnist", "train", synthetic_data)
    valid = load_dataset("mnist", "valid", synthetic_data)
    test = load_dataset("mnist", "test", synthetic_data)
    assert (len(train), len(valid), len(test)) == (220, 20, 40)
    frey = [load_dataset("frey", s, synthetic_data).x for s in ("train", "valid", "test")]
    assert sum(len(x) for x in frey) == 1965
    again = load_dataset("frey", "test", synthetic_data).x
    assert torch.equal(again, frey[2])  # the split is fixed
    ff = scipy.io.loadmat(synthetic_data / "frey_faces" / "frey_rawface.mat")["ff"]
    assert np.array_equal(
        read_frey(synthetic_data / "frey_faces" / "frey_rawface.mat")[3], ff[:, 3].reshape(28, 20)
    )


def test_olivetti_orientation(tmp_path: Path) -> None:
    # A face stored column-major as MATLAB does: reading it back must give the same image.
    image = np.zeros((64, 64), np.uint8)
    image[:10] = 200  # bright top rows
    faces = np.tile(image.T.reshape(-1, 1), (1, 400))
    scipy.io.savemat(tmp_path / "o.mat", {"faces": faces})
    out = read_olivetti(tmp_path / "o.mat")
    assert out.shape == (400, 64, 64) and (out[0, :10] == 200).all() and (out[0, 10:] == 0).all()


def test_mat_errors(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "w.mat", {"other": np.zeros((3, 3))})
    with pytest.raises(DataError, match="no variable 'ff'"):
        read_frey(tmp_path / "w.mat")
    (tmp_path / "junk.mat").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable MAT file"):
        read_olivetti(tmp_path / "junk.mat")


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 30), dtype=np.uint8)).save(tmp_path / "imgs" / "sub" / "b.jpg")
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    grey = read_image_folder(tmp_path / "imgs", (16, 16), channels=1)
    rgb = read_image_folder(tmp_path / "imgs", (16, 12), channels=3)
    assert grey.shape == (2, 1, 16, 16) and rgb.shape == (2, 3, 16, 12)
    assert grey.dtype == np.uint8
    data = load_dataset(f"folder:{tmp_path / 'imgs'}", "train", size=(16, 16))
    assert data.x.shape[1:] == (1, 16, 16)
    with pytest.raises(DataError, match="size"):
        load_dataset(f"folder:{tmp_path / 'imgs'}", "train")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        read_image_folder(tmp_path / "imgs", (16, 16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .png"):
        read_image_folder(tmp_path / "empty", (16, 16))


def test_data_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="data_dir: .* is not a directory"):
        resolve_data_dir(tmp_path / "nope")
    monkeypatch.setenv("CONDVAE_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    monkeypatch.setenv("CONDVAE_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="CONDVAE_DATA"):
        resolve_data_dir()
    with pytest.raises(DataError, match="data_dir: t10k-images-idx3-ubyte.gz not found in .*mnist"):
        load_dataset("mnist", "test", tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", "test", tmp_path)
    with pytest.raises(DataError, match="split"):
        load_dataset("mnist", "validation", tmp_path)


def test_size_mismatch_error(synthetic_data: Path) -> None:
    with pytest.raises(DataError, match="size: dataset 'mnist' has 28x28 images, asked for 32x32"):
        load_dataset("mnist", "test", synthetic_data, size=(32, 32))


# -- binarisation -------------------------------------------------------------------------
def test_fixed_binarisation_is_reproducible_and_unbiased() -> None:
    x = torch.full((200, 1, 28, 28), 0.3)
    a, b = fixed_binarize(x), fixed_binarize(x)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(a.mean()) - 0.3) < 0.01
    assert not torch.equal(a, fixed_binarize(x, seed=1))
    assert torch.equal(fixed_binarize(torch.ones(3, 4)), torch.ones(3, 4))


# -- download (no network: a file:// mirror) ------------------------------------------------
def test_download_verifies_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    payload = gzip.compress(b"payload")
    (mirror / "f.gz").write_bytes(payload)
    good = md5sum(mirror / "f.gz")
    out = fetch_verified((mirror / "f.gz").as_uri(), tmp_path / "cache" / "f.gz", good)
    assert out.read_bytes() == payload
    with pytest.raises(DataError, match="MD5"):
        fetch_verified((mirror / "f.gz").as_uri(), tmp_path / "cache" / "g.gz", "0" * 32)
    assert not (tmp_path / "cache" / "g.gz").exists()
    with pytest.raises(DataError, match="could not fetch"):
        download("mnist", tmp_path / "cache", base_url=(tmp_path / "nowhere").as_uri() + "/")
    with pytest.raises(DataError, match="can download"):
        download("frey", tmp_path)
