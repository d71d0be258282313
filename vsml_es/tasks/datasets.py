"""Datasets for meta-training and meta-test, as normalised float arrays.

Every dataset is returned as a :class:`Dataset` with a meta-train split and a held-out
meta-test split of images, flattened to [N, D] and normalised as in the paper: pixels to
[0, 1], then ``(x - mean) / std`` with one scalar pair per dataset (VSML.md §5).

``digits`` is scikit-learn's bundled real handwritten digits (1,797 8x8 images, no
network needed): the default for demos and tests.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class Dataset(NamedTuple):
    name: str
    train_x: np.ndarray  # [N_train, D] float32, normalised
    train_y: np.ndarray  # [N_train] int32
    test_x: np.ndarray  # [N_test, D] float32, normalised
    test_y: np.ndarray  # [N_test] int32
    n_classes: int
    image_shape: tuple  # (H, W, C) before flattening


def _normalise(x01: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((x01 - mean) / std).astype(np.float32)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, class-balanced split of indices into (train, test)."""
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits() -> Dataset:
    """scikit-learn's digits: 8x8 grey images with values 0..16, 10 classes.

    Split 1,297 meta-train / 500 held-out images (fixed, stratified). Normalised with the
    meta-train split's pixel mean and std.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x01 = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int32)
    train, test = stratified_split(y, 500 / len(y), seed=0)
    mean, std = float(x01[train].mean()), float(x01[train].std())
    return Dataset("digits", _normalise(x01[train], mean, std), y[train],
                   _normalise(x01[test], mean, std), y[test], 10, (8, 8, 1))


DATASETS: dict[str, Callable[[], Dataset]] = {
    "digits": load_digits,
}


def load_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]()
