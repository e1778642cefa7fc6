"""Optional download of the standard MNIST / Fashion-MNIST files, verified by MD5.

For users online only: nothing in the library or its tests needs the network. Files land in
``<data_dir>/<dataset>/`` (default: the condvae cache folder, which ``resolve_data_dir`` also
searches) and are kept only if their checksum matches the published one.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from condvae.data.paths import cache_dir
from condvae.errors import DataError

MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_verified(url: str, target: Path, md5: str) -> Path:
    """Download ``url`` to ``target`` (temp file, checksum, rename); keep an existing good file."""
    if target.is_file() and md5sum(target) == md5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download: could not fetch {url} ({exc})") from None
    got = md5sum(tmp)
    if got != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download: {url} has MD5 {got}, expected {md5}; file discarded")
    os.replace(tmp, target)
    return target


def download(dataset: str, data_dir: str | Path | None = None, base_url: str | None = None) -> Path:
    """Fetch the four IDX files of ``dataset`` into ``<data_dir>/<dataset>/``; returns data_dir."""
    if dataset not in MD5:
        raise DataError(f"dataset: can download {sorted(MD5)}, not {dataset!r}")
    root = Path(data_dir) if data_dir else cache_dir()
    base = base_url or MIRRORS[dataset]
    for name, md5 in MD5[dataset].items():
        fetch_verified(base + name, root / dataset / name, md5)
    return root
