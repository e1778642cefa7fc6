"""Datasets: MNIST, Fashion-MNIST, Frey faces, Olivetti faces and folders of images."""

from condvae.data.binarize import dynamic_binarize, fixed_binarize
from condvae.data.datasets import DATA_SHAPES, SPLITS, ImageData, load_dataset
from condvae.data.folder import load_image, read_image_folder
from condvae.data.idx import read_idx, write_idx
from condvae.data.mat import read_frey, read_olivetti
from condvae.data.paths import resolve_data_dir
from condvae.data.tables import TABLES, Table, as_array, infer_columns, load_table

__all__ = [
    "DATA_SHAPES",
    "SPLITS",
    "TABLES",
    "ImageData",
    "Table",
    "as_array",
    "dynamic_binarize",
    "fixed_binarize",
    "infer_columns",
    "load_dataset",
    "load_image",
    "load_table",
    "read_frey",
    "read_idx",
    "read_image_folder",
    "read_olivetti",
    "resolve_data_dir",
    "write_idx",
]
