"""flowsim: gradient-flow dynamics of deep ReLU classifiers trained with the square loss.

Importing flowsim turns on JAX's 64-bit mode (``jax_enable_x64``): every array flowsim makes is float64.
This is the one global side effect of the import.
"""

import jax

jax.config.update("jax_enable_x64", True)

from . import datasets  # noqa: E402
from ._data import Dataset  # noqa: E402
from ._integrate import simulate  # noqa: E402
from ._sweep import SweepResult, load, sweep  # noqa: E402
from ._errors import FlowsimError, InputError, ResultFileError, SolveError  # noqa: E402
from ._model import Model, available_models, load_model  # noqa: E402
from ._network import Network  # noqa: E402
from ._state import State  # noqa: E402
from ._trajectory import Trajectory  # noqa: E402
from ._sgd import sgd  # noqa: E402
from ._compare import Comparison, ConvergenceOrder, compare, convergence_order  # noqa: E402
from ._symbolic import Regime  # noqa: E402
from . import plot  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "FlowsimError",
    "InputError",
    "Model",
    "Network",
    "Regime",
    "ResultFileError",
    "SolveError",
    "State",
    "Trajectory",
    "available_models",
    "datasets",
    "load_model",
    "simulate",
    "sweep",
    "load",
    "SweepResult",
    "plot",
    "sgd",
    "compare",
    "convergence_order",
    "Comparison",
    "ConvergenceOrder",
]
