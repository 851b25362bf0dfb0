"""Nullclines of a planar reduction: solved by sympy where it can, else marked for contouring."""

from __future__ import annotations

import dataclasses

from ._curves import solve_factor, structure


@dataclasses.dataclass(frozen=True)
class Nullcline:
    """Where one component of the field vanishes: ``method`` ``"symbolic"`` (solved `branches`) or ``"contour"``."""

    component: int
    method: str
    branches: tuple


def nullclines(red) -> tuple[Nullcline, Nullcline]:
    """The two nullclines of `red`, solved by sympy where it can (polynomial losses), else marked for
    contouring.

    **Returns:** ``(N_1, N_2)``, where ``N_i`` is the set ``F_i = 0`` (``F_i`` the i-th component).
    """
    out = []
    facs = structure(red)
    for i in range(2):
        branches = []
        ok = facs is not None
        if ok:
            for fac in facs[i]:
                b = solve_factor(red, fac)
                if b is None:
                    ok = False
                    break
                branches.extend(b)
        out.append(Nullcline(i, "symbolic", tuple(branches)) if ok else Nullcline(i, "contour", ()))
    return tuple(out)
