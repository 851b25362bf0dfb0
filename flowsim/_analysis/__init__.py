"""Comparison and analysis: flows against GD/SGD runs (``compare``, ``convergence_order``) and the exact planar
reductions of a model (the reduced model, its equilibria and continua, nullclines, classification)."""

from ._classify import classify as classify
from ._compare import Comparison as Comparison, compare as compare
from ._convergence import ConvergenceOrder as ConvergenceOrder, convergence_order as convergence_order
from ._curves import Curve as Curve
from ._equilibria import Continuum as Continuum, Equilibrium as Equilibrium
from ._nullclines import Nullcline as Nullcline
from ._reduced import (
    Reduced2D as Reduced2D,
    default_data as default_data,
    interpolable_data as interpolable_data,
    reduced_model as reduced_model,
)
