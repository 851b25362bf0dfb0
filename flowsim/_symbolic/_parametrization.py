"""A layer's raw coordinates in full dimension, read off the regime's embedding (what ``fs.sgd`` steps in).

The embedding gives one layer's raw Euclidean coordinates in terms of its scale ``s`` and a direction angle
``θ`` on a great circle. In full dimension the ``cos θ, sin θ`` pair becomes a matrix ``a · V_k`` (``V_k`` the
unit-norm direction) and a coordinate free of ``θ`` a scalar. Three shapes occur, each with an exact map to
``(ρ_k, V_k)`` and back:

- ``(s cos θ, s sin θ)``: the raw matrix is the weight ``W_k = ρ_k V_k``; ``ρ_k = ‖W_k‖``, ``V_k = W_k/‖W_k‖``.
- ``(s, c cos θ, c sin θ)``: the scale is a coordinate ``g_k = ρ_k`` and the matrix ``v_k = c V_k`` a direction
  that enters as ``v_k/‖v_k‖`` (weight normalization).
- ``(c cos θ, c sin θ)`` with a shared scale: the network's ``ρ`` is one raw coordinate and each ``v_k = c V_k``
  a direction, as above.
"""

from __future__ import annotations

import dataclasses
import functools

import sympy as sp

from .._errors import FlowsimError
from ._regime import Regime
from ._symbols import lam, s, theta


@dataclasses.dataclass(frozen=True)
class Parametrization:
    """How one layer's raw coordinates map to its scale and direction (hashable: a static part of programs).

    Fields:

    - `direction`: ``"weights"`` (the raw matrix is ``W_k = ρ_k V_k``) or ``"unit"`` (the raw matrix is a
      direction ``v_k = amplitude · V_k``, used through ``v_k/‖v_k‖``).
    - `amplitude`: the constant ``c`` of ``v_k = c V_k`` for ``"unit"`` directions (``None`` for weights).
    - `scale`: ``"norm"`` (``ρ_k = ‖W_k‖``), ``"coordinate"`` (each ``ρ_k`` is a raw coordinate) or ``"shared"``
      (one raw ``ρ`` for the network).
    - `retraction`: after each discrete step, put every ``v_k`` back on its sphere of radius `amplitude`.
    - `quadratic`: whether the regularizer is ``λ s²`` (then a weight's decay ``λ‖W_k‖²`` needs no norm).
    """

    direction: str
    amplitude: float | None
    scale: str
    retraction: bool
    quadratic: bool = False


def _unsupported(regime: Regime, why: str) -> FlowsimError:
    return FlowsimError(
        f"model {regime.name!r}: its embedding {regime.embedding(s, theta)} {why}; fs.sgd steps in embeddings "
        "(s cos θ, s sin θ), (s, c cos θ, c sin θ) or, with a shared scale, (c cos θ, c sin θ)"
    )


@functools.lru_cache(maxsize=64)
def parametrization(regime: Regime) -> Parametrization:
    """Read the raw parametrization of one layer off `regime`'s embedding.

    **Returns:** a `Parametrization`.

    **Raises:** [`flowsim.FlowsimError`][flowsim.FlowsimError] when the embedding is not one of the three shapes above.
    """
    scalars, amplitude = [], {}
    for coord in regime.embedding(s, theta):
        coord = sp.sympify(coord)
        if not coord.has(theta):
            scalars.append(coord)
            continue
        for trig in (sp.cos(theta), sp.sin(theta)):
            a = sp.simplify(coord / trig)
            if not a.has(theta) and trig not in amplitude:
                amplitude[trig] = a
                break
        else:
            raise _unsupported(regime, f"has a coordinate {coord} that is not a(s)·cos θ or a(s)·sin θ")
    if len(amplitude) != 2 or sp.simplify(amplitude[sp.cos(theta)] - amplitude[sp.sin(theta)]) != 0:
        raise _unsupported(regime, "does not carry the direction as one pair a(s)·(cos θ, sin θ)")
    a = amplitude[sp.cos(theta)]
    quadratic = sp.simplify(regime.regularizer(s, lam) - lam * s**2) == 0
    if regime.per_layer and sp.simplify(a - s) == 0 and not scalars:
        if regime.retraction:
            raise _unsupported(regime, "has no direction coordinates to retract (declare retraction=False)")
        return Parametrization("weights", None, "norm", False, quadratic)
    if a.has(s) or not (a.is_number and float(a) > 0):
        raise _unsupported(regime, f"has a direction amplitude {a} that is neither s nor a positive constant")
    if regime.per_layer:
        if len(scalars) != 1 or sp.simplify(scalars[0] - s) != 0:
            raise _unsupported(regime, "does not hold the scale s as one coordinate of its own")
        return Parametrization("unit", float(a), "coordinate", bool(regime.retraction), quadratic)
    if scalars:
        raise _unsupported(regime, "has coordinates besides the direction (a shared-scale model's ρ is its own)")
    return Parametrization("unit", float(a), "shared", bool(regime.retraction), quadratic)
