"""The compiled model and the network: a [`flowsim.Model`][flowsim.Model] (a regime with λ and a loss), its vector field
on states ([`flowsim.State`][flowsim.State]), the [`flowsim.Network`][flowsim.Network] it runs on, and the input checks
every entry point shares."""

from ._checks import (
    check_lam as check_lam,
    check_model as check_model,
    check_network as check_network,
    check_problem as check_problem,
    check_state as check_state,
)
from ._compiled import Compiled as Compiled, compiled as compiled
from ._field import (
    DEFAULT_SMOOTHING as DEFAULT_SMOOTHING,
    field as field,
    resolve_smoothing as resolve_smoothing,
)
from ._filippov import (
    FilippovInfo as FilippovInfo,
    exact_field as exact_field,
    metric_norm as metric_norm,
    pinned as pinned,
)
from ._load import available_models as available_models, load_model as load_model
from ._model import Model as Model
from ._network import Network as Network
from ._state import State as State
