"""flowsim: gradient-flow dynamics of deep ReLU classifiers trained with the square loss.

Importing flowsim turns on JAX's 64-bit mode (``jax_enable_x64``): every array flowsim makes is float64.
This is the one global side effect of the import.

The package follows the data flow (see the README's "Architecture"): ``_symbolic`` (a regime's derivation) →
``_model`` (the compiled model and the network) → ``_solver`` (simulate, sweep) → ``_discrete`` (GD/SGD) →
``_analysis`` (comparison, reduced 2-D models) → ``plot`` (drawing) → ``_experiments`` (the predictions) →
``cli``. This module is the flat public API.
"""

import jax

jax.config.update("jax_enable_x64", True)

from . import datasets as datasets, plot as plot
from ._analysis import (
    Comparison as Comparison,
    ConvergenceOrder as ConvergenceOrder,
    compare as compare,
    convergence_order as convergence_order,
)
from ._data import Dataset as Dataset
from ._discrete import sgd as sgd
from ._errors import (
    FlowsimError as FlowsimError,
    InputError as InputError,
    ResultFileError as ResultFileError,
    SolveError as SolveError,
)
from ._model import (
    Model as Model,
    Network as Network,
    State as State,
    available_models as available_models,
    load_model as load_model,
)
from ._reproduce import reproduce as reproduce
from ._solver import (
    RosenbrockW as RosenbrockW,
    RunStats as RunStats,
    SweepResult as SweepResult,
    Trajectory as Trajectory,
    load as load,
    simulate as simulate,
    sweep as sweep,
)
from ._symbolic import Regime as Regime
from ._version import __version__ as __version__

__all__ = [
    "Dataset",
    "FlowsimError",
    "InputError",
    "Model",
    "Network",
    "Regime",
    "ResultFileError",
    "RosenbrockW",
    "RunStats",
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
    "reproduce",
]
