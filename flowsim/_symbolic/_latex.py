"""Equations as LaTeX, for display (``Model.latex``, ``Reduced2D.latex``)."""

from __future__ import annotations

from collections.abc import Iterable

import sympy as sp


def latex(equations: Iterable[sp.Eq]) -> str:
    """The `equations` as one LaTeX ``aligned`` block, aligned at the first ``=`` of each."""
    lines = [sp.latex(eq).replace("=", "&=", 1) for eq in equations]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"
