"""The kind of a planar equilibrium from its Jacobian's eigenvalues."""

from __future__ import annotations

import numpy as np


def classify(eigenvalues, tol: float = 1e-7) -> str:
    """The kind of a planar equilibrium from its Jacobian's eigenvalues (`tol` relative to the largest)."""
    ev = np.asarray(eigenvalues, dtype=complex)
    scale = max(float(np.max(np.abs(ev))), 1e-300)
    re, im = ev.real / scale, ev.imag / scale
    if np.min(np.abs(ev)) / scale <= tol:
        return "degenerate"
    if np.max(np.abs(im)) > tol:
        if np.all(np.abs(re) <= tol):
            return "center"
        return "stable focus" if re[0] < 0 else "unstable focus"
    if np.all(re < 0):
        return "stable node"
    if np.all(re > 0):
        return "unstable node"
    return "saddle"


def transverse(eigenvalues) -> str:
    """``"attracting"`` or ``"repelling"``: the sign of the largest-magnitude eigenvalue at every point of a
    continuum (rows of `eigenvalues`), or ``"mixed"``."""
    ev = np.asarray(eigenvalues)
    big = np.take_along_axis(ev, np.argmax(np.abs(ev), axis=1)[:, None], axis=1)[:, 0].real
    return "attracting" if np.all(big < 0) else "repelling" if np.all(big > 0) else "mixed"
