"""Symbolic layer: a regime's declaration, the derivation of its flow, closed forms, and LaTeX.

Nothing here is typed in by hand: the equations follow from the per-sample loss, the regularizer and the
parametrization a [`flowsim.Regime`][flowsim.Regime] declares (see `flowsim._symbolic._derive`).
"""

from ._derive import Derivation as Derivation, derive as derive
from ._equilibrium import aggregate as aggregate, rho_equilibrium as rho_equilibrium
from ._latex import latex as latex
from ._parametrization import Parametrization as Parametrization, parametrization as parametrization
from ._regime import Regime as Regime
from ._symbols import (
    LOSSES as LOSSES,
    G_n as G_n,
    N as N,
    f as f,
    f_n as f_n,
    lam as lam,
    n_idx as n_idx,
    rho as rho,
    rho_rest as rho_rest,
    s as s,
    s_j as s_j,
    t as t,
    theta as theta,
    u as u,
    y as y,
    y_n as y_n,
)
