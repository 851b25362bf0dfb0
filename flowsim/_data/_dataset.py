"""Labelled binary data sets: validated, immutable, float64."""

from __future__ import annotations

import numpy as np

from .._errors import Checked, fail


class Dataset:
    """A binary classification data set ``(x_n, y_n)``, ``n = 1..N``.

    **Arguments:**

    - `x`: inputs, shape ``(N, d)``, finite real numbers (stored as float64).
    - `y`: labels, shape ``(N,)``, each exactly ``-1`` or ``+1``.

    The arrays are copied, converted to float64 and made read-only, so a Dataset never changes.
    """

    __slots__ = ("_x", "_y")

    def __init__(self, x, y):
        try:
            x = np.array(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise fail("x", type(x).__name__, "a 2-D array of real numbers") from None
        try:
            y = np.array(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise fail("y", type(y).__name__, "a 1-D array of labels -1 or +1") from None
        if x.ndim != 2:
            raise fail("x", f"array of shape {x.shape}", "a 2-D array of shape (N, d)")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise fail("x", f"array of shape {x.shape}", "non-empty data: at least one sample and one feature")
        if not np.all(np.isfinite(x)):
            bad = int(np.sum(~np.isfinite(x)))
            raise fail("x", f"{bad} NaN or Inf entries", "finite values only")
        if y.ndim != 1:
            raise fail("y", f"array of shape {y.shape}", "a 1-D array of shape (N,)")
        if y.shape[0] != x.shape[0]:
            raise fail("y", f"{y.shape[0]} labels", f"one label per row of x ({x.shape[0]})")
        if not np.all(np.isin(y, (-1.0, 1.0))):
            bad = np.unique(y[~np.isin(y, (-1.0, 1.0))])[:5]
            raise fail("y", f"labels including {bad.tolist()}", "labels exactly -1 or +1")
        x.setflags(write=False)
        y.setflags(write=False)
        object.__setattr__(self, "_x", x)
        object.__setattr__(self, "_y", y)

    def __setattr__(self, name, value):
        raise AttributeError("Dataset is immutable")

    @property
    def x(self) -> np.ndarray:
        """Inputs, shape ``(N, d)``, float64, read-only."""
        return self._x

    @property
    def y(self) -> np.ndarray:
        """Labels, shape ``(N,)``, float64 in {-1, +1}, read-only."""
        return self._y

    @property
    def n(self) -> int:
        """Number of samples N."""
        return self._x.shape[0]

    @property
    def dim(self) -> int:
        """Input dimension d."""
        return self._x.shape[1]

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        pos = int(np.sum(self._y > 0))
        return f"Dataset(n={self.n}, dim={self.dim}, positives={pos}, negatives={self.n - pos})"

    def subset(self, index) -> Dataset:
        """The samples selected by `index` (an integer array or boolean mask) as a new Dataset."""
        return Dataset(self._x[index], self._y[index])

    def split(self, test_fraction: Checked[float] = 0.25, seed: int = 0) -> tuple[Dataset, Dataset]:
        """A reproducible stratified train/test split.

        **Arguments:**

        - `test_fraction`: fraction of each class held out, in (0, 1).
        - `seed`: the split depends only on this seed and the data.

        **Returns:** ``(train, test)``.
        """
        if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
            raise fail("test_fraction", test_fraction, "a number strictly between 0 and 1")
        rng = np.random.default_rng(seed)
        test = np.zeros(self.n, dtype=bool)
        for label in (-1.0, 1.0):
            idx = np.flatnonzero(self._y == label)
            k = int(round(test_fraction * idx.size))
            test[rng.permutation(idx)[:k]] = True
        if test.all() or not test.any():
            raise fail("test_fraction", test_fraction, f"a fraction leaving both parts non-empty for N = {self.n}")
        return self.subset(~test), self.subset(test)
