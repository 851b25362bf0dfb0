"""Data sets: synthetic Gaussian clusters and the bundled 8x8 handwritten digits (no download)."""

from __future__ import annotations

import numpy as np

from .._errors import Checked, check_int, check_real, fail
from ._dataset import Dataset


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def gaussian_clusters(
    n: Checked[int] = 64,
    dim: Checked[int] = 8,
    seed: Checked[int] = 0,
    separation: Checked[float] = 2.0,
    noise: Checked[float] = 1.0,
    label_noise: Checked[float] = 0.0,
    normalize: bool = True,
) -> Dataset:
    """Two Gaussian clusters at ``±separation/2 · u`` (u a random unit vector), half of each class.

    **Arguments:**

    - `n`: number of samples (at least 2; classes get ``n // 2`` and ``n - n // 2``).
    - `dim`: input dimension.
    - `seed`: the data depend only on the arguments, so the same seed gives the same data.
    - `separation`: distance between the cluster centres.
    - `noise`: standard deviation of each coordinate around its centre.
    - `label_noise`: fraction of labels flipped at random, in [0, 0.5].
    - `normalize`: scale each row to unit Euclidean norm (the default; ReLU nets are homogeneous).

    **Returns:** a [`flowsim.Dataset`][flowsim.Dataset].
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise fail("n", n, "an integer >= 2")
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise fail("dim", dim, "an integer >= 1")
    check_real("separation", separation, "a finite number >= 0", lambda v: v >= 0)
    check_real("noise", noise, "a finite number >= 0", lambda v: v >= 0)
    check_real("label_noise", label_noise, "a fraction in [0, 0.5]", lambda v: 0.0 <= v <= 0.5)
    check_int("seed", seed, "an integer seed >= 0", lambda v: v >= 0)
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    y = np.concatenate([np.ones(n // 2), -np.ones(n - n // 2)])
    x = y[:, None] * (separation / 2) * direction + noise * rng.standard_normal((n, dim))
    if label_noise > 0:
        flip = rng.permutation(n)[: int(round(label_noise * n))]
        y[flip] *= -1
    order = rng.permutation(n)
    x, y = x[order], y[order]
    if normalize:
        x = _unit_rows(x)
    return Dataset(x, y)


def digits(a: Checked[int] = 3, b: Checked[int] = 8, normalize: bool = True) -> Dataset:
    """Two classes of the 8x8 handwritten digits that ship with scikit-learn (real data, no download).

    **Arguments:**

    - `a`: the digit labelled ``+1``.
    - `b`: the digit labelled ``-1`` (different from `a`).
    - `normalize`: scale each 64-pixel row to unit norm (the default).

    **Returns:** a [`flowsim.Dataset`][flowsim.Dataset] with ``dim = 64``.
    """
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, (int, np.integer)) or not 0 <= value <= 9:
            raise fail(name, value, "a digit 0..9")
    if a == b:
        raise fail("b", b, f"a digit different from a = {a}")
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network access

    bunch = load_digits()
    keep = (bunch.target == a) | (bunch.target == b)
    x = bunch.data[keep].astype(np.float64)
    y = np.where(bunch.target[keep] == a, 1.0, -1.0)
    if normalize:
        x = _unit_rows(x)
    return Dataset(x, y)
