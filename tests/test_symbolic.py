"""flowsim._symbolic: the derived equations, their LaTeX, and the raw parametrization read off an embedding."""

import re

import pytest
import sympy as sp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import flowsim as fs
from flowsim import _symbolic as sym


def test_equations_are_derived_and_match_theory():
    """The derived sympy equations reduce to those of docs/theory.md#the-regimes for the square loss."""
    rho, s, f, y, lam = sp.symbols("rho rho_k f y lambda", real=True)
    d = fs.load_model("normalized").derivation
    assert sp.simplify(d.scale_sample - 2 * (y - rho * f) * f) == 0
    assert sp.simplify(d.scale_reg + 2 * lam * rho) == 0
    assert d.direction_factor == 1
    u = fs.load_model("unnormalized").derivation
    assert sp.simplify(u.scale_sample - 2 * rho / s * (y - rho * f) * f) == 0
    assert sp.simplify(u.direction_factor - 1 / s**2) == 0
    w = fs.load_model("weightnorm").derivation
    assert w.direction_factor == 1 and sp.simplify(w.scale_reg + 2 * lam * s) == 0


def test_latex_renders():
    for name in fs.available_models():
        m = fs.load_model(name, lam=0.1)
        text = m.latex()
        assert "\\sum_{n=1}^{N}" in text and "\\frac{d}{d t}" in text
        fig = Figure()
        for i, eq in enumerate(m.equations.values()):
            fig.text(0.01, 0.9 - 0.3 * i, "$" + sp.latex(eq) + "$")
        FigureCanvasAgg(fig).draw()  # raises if mathtext cannot parse it


def test_parametrization_of_the_installed_regimes():
    """The raw coordinates fs.sgd steps in, read off each embedding (not off the regime's name)."""
    p = {name: sym.parametrization(fs.load_model(name).regime) for name in fs.available_models()}
    assert p["unnormalized"] == sym.Parametrization("weights", None, "norm", False, True)
    assert p["weightnorm"] == sym.Parametrization("unit", 1.0, "coordinate", False, True)
    assert p["normalized"] == sym.Parametrization("unit", 1.0, "shared", True, True)


@pytest.mark.parametrize(
    "per_layer, embedding, regularizer, retraction, expect",
    [
        (
            True,
            lambda s, th: (s * sp.sin(th), s * sp.cos(th)),
            lambda s, lam: lam * s**4,
            False,
            sym.Parametrization("weights", None, "norm", False, False),
        ),
        (
            True,
            lambda s, th: (2 * sp.cos(th), s, 2 * sp.sin(th)),
            lambda s, lam: lam * s**2,
            True,
            sym.Parametrization("unit", 2.0, "coordinate", True, True),
        ),
        (
            False,
            lambda s, th: (sp.cos(th), sp.sin(th)),
            lambda r, lam: lam * (r**2 + r**4),
            False,
            sym.Parametrization("unit", 1.0, "shared", False, False),
        ),
    ],
)
def test_parametrization_of_new_embeddings(per_layer, embedding, regularizer, retraction, expect):
    regime = fs.Regime("new", "a regime of one's own", per_layer, embedding, regularizer, retraction)
    assert sym.parametrization(regime) == expect


@pytest.mark.parametrize(
    "per_layer, embedding, retraction, words",
    [
        (True, lambda s, th: (s**2 * sp.cos(th), s**2 * sp.sin(th)), False, "neither s nor a positive constant"),
        (True, lambda s, th: (s * sp.cos(th), sp.sin(th)), False, "one pair"),
        (True, lambda s, th: (sp.cos(th) * sp.sin(th), s), False, "not a(s)"),
        (True, lambda s, th: (s * sp.cos(th), s * sp.sin(th)), True, "no direction coordinates to retract"),
        (True, lambda s, th: (sp.cos(th), sp.sin(th)), False, "scale s as one coordinate"),
        (False, lambda s, th: (sp.cos(th), sp.sin(th), 1), False, "besides the direction"),
    ],
)
def test_parametrization_rejects_other_embeddings(per_layer, embedding, retraction, words):
    regime = fs.Regime(
        "odd", "an embedding fs.sgd cannot step in", per_layer, embedding, lambda s, lam: lam * s**2, retraction
    )
    with pytest.raises(fs.FlowsimError, match=re.escape(words)):
        sym.parametrization(regime)
