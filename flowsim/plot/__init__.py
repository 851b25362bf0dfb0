"""Phase portraits of the flow (``fs.plot``): drawing only.

- [`flowsim.plot.phase_portrait`][flowsim.plot.phase_portrait]: the exact planar reductions of a model (see
  [`flowsim.plot.reduced_model`][flowsim.plot.reduced_model]): vector field, nullclines, classified equilibria (and
  continua of equilibria), and an ensemble of trajectories integrated in one compiled, vmapped call.
- [`flowsim.plot.deep_portrait`][flowsim.plot.deep_portrait]: deep networks, where no planar model is exact:
  trajectories of ``fs.simulate`` projected onto (normalized margin or alignment, ρ) together with their ρ_eq curves.
- [`flowsim.plot.save_all`][flowsim.plot.save_all]: writes the project's phase-portrait figures (called by
  ``flowsim reproduce``).

The analysis behind the portraits (the reduced models, their equilibria, nullclines and classification) lives
in ``flowsim._analysis``; its names are re-exported here, where they have always been published.

Figures are built with `matplotlib.figure.Figure` directly, never through ``pyplot``: importing
this module does not select a backend or open a window, and ``savefig`` renders with Agg.
"""

from .._analysis import (
    Continuum as Continuum,
    Curve as Curve,
    Equilibrium as Equilibrium,
    Nullcline as Nullcline,
    Reduced2D as Reduced2D,
    classify as classify,
    default_data as default_data,
    interpolable_data as interpolable_data,
    reduced_model as reduced_model,
)
from ._deep import deep_portrait as deep_portrait
from ._figures import save_all as save_all
from ._phase import phase_portrait as phase_portrait

__all__ = [
    "Continuum",
    "Curve",
    "Equilibrium",
    "Nullcline",
    "Reduced2D",
    "classify",
    "deep_portrait",
    "default_data",
    "interpolable_data",
    "phase_portrait",
    "reduced_model",
    "save_all",
]
