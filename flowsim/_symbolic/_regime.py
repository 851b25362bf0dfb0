"""The declaration of one regime: the ingredients ``models/<name>.py`` (or a user's file) provides."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import sympy as sp


@dataclasses.dataclass(frozen=True)
class Regime:
    """The ingredients of one regime, declared in ``models/<name>.py`` (or in any file passed to
    [`flowsim.load_model`][flowsim.load_model]).

    **Arguments:**

    - `name`: the name ``load_model`` knows it by.
    - `description`: one line for users.
    - `per_layer`: ``True`` for one scale ``ρ_k`` per layer, ``False`` for one shared scale ``ρ``.
    - `embedding`: ``(s, θ) -> tuple`` of sympy expressions, the raw Euclidean coordinates of one layer's
      parameters in terms of its scale ``s`` (per-layer models) and a direction angle ``θ``.
      Shared-scale models ignore ``s``: their ``ρ`` is itself a Euclidean coordinate. The same coordinates,
      in full dimension, are what [`flowsim.sgd`][flowsim.sgd] steps in: ``(s cos θ, s sin θ)`` are the weights
      ``W_k = ρ_k V_k``; ``(cos θ, sin θ)`` a direction ``v_k`` used as ``v_k/‖v_k‖``; a lone ``s`` the scale
      as a coordinate of its own (see `flowsim._symbolic.parametrization`).
    - `regularizer`: ``(s, λ) -> expr``, the weight decay of one layer (per-layer models, summed over
      layers) or of the shared scale ``ρ``.
    - `retraction`: whether a discrete step ([`flowsim.sgd`][flowsim.sgd]) puts the direction coordinates back on
      their unit sphere, as a normalization layer does; ``False`` (the default) when the directions merely
      enter as ``v/‖v‖`` (weight normalization) and may drift in norm.
    """

    name: str
    description: str
    per_layer: bool
    embedding: Callable[[sp.Symbol, sp.Symbol], tuple]
    regularizer: Callable[[sp.Symbol, sp.Symbol], sp.Expr]
    retraction: bool = False
