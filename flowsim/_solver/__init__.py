"""Solvers: ``simulate`` (one flow) and ``sweep`` (many, vmapped and sharded), the pieces they share (options
and save grid, the flat field, the diffrax solve, projection onto the manifolds, observables), the
[`flowsim.Trajectory`][flowsim.Trajectory] they return, and sweep result files."""

from .._model import DEFAULT_SMOOTHING as DEFAULT_SMOOTHING  # kept here for the experiments
from ._observables import observe as observe, observe_one as observe_one
from ._result import SweepResult as SweepResult, load as load
from ._rosenbrock import RosenbrockW as RosenbrockW
from ._simulate import simulate as simulate
from ._stats import RunStats as RunStats
from ._sweep import sweep as sweep
from ._trajectory import Trajectory as Trajectory
