"""Input checks shared by the entry points: network, data and state against each other (plain Python, before
any tracing), each raising [`flowsim.InputError`][flowsim.InputError] that names the argument."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._data import Dataset
from .._errors import check_real, fail
from ._network import Network
from ._state import State


def check_lam(lam) -> float:
    """`lam` as a float, else an InputError."""
    return check_real("lam", lam, "a finite real number >= 0 (the weight-decay strength)", lambda v: v >= 0)


def check_positive(name: str, value) -> float:
    """`value` as a finite float > 0, else an InputError naming `name`."""
    return check_real(name, value, "a finite number > 0", lambda v: v > 0)


def check_model(model) -> None:
    """Raise unless `model` is a [`flowsim.Model`][flowsim.Model]."""
    from ._model import Model  # the checks come first in the package; the Model class uses them

    if not isinstance(model, Model):
        raise fail("model", type(model).__name__, "a flowsim.Model (from fs.load_model)")


def check_network(net) -> None:
    """Raise unless `net` is a [`flowsim.Network`][flowsim.Network]."""
    if not isinstance(net, Network):
        raise fail("net", type(net).__name__, "a flowsim.Network")


def check_problem(net, data) -> None:
    """Raise unless `net` is a Network and `data` a Dataset of matching input dimension."""
    check_network(net)
    if not isinstance(data, Dataset):
        raise fail("data", type(data).__name__, "a flowsim.Dataset")
    if data.dim != net.widths[0]:
        raise fail("data", f"inputs of dimension {data.dim}", f"dimension {net.widths[0]} = net.widths[0]")


def check_state(model, net: Network, state, name: str = "state") -> None:
    """Raise unless `state` is a State of `model` shaped for `net`, with unit-norm directions."""
    if not isinstance(state, State):
        raise fail(name, type(state).__name__, "a flowsim.State (from model.init or model.state)")
    if len(state.V) != net.depth:
        raise fail(name, f"{len(state.V)} layers", f"{net.depth} layers to match the network")
    for k, (v, shape) in enumerate(zip(state.V, net.shapes)):
        if tuple(v.shape) != shape:
            raise fail(f"{name}.V[{k}]", f"shape {tuple(v.shape)}", f"shape {shape} to match the network")
    if model.per_layer and state.rho_k is None:
        raise fail(name, "a shared-scale state", f"per-layer scales rho_k for the {model.name!r} model")
    if not model.per_layer and state.rho_k is not None:
        raise fail(name, "a per-layer state", f"a shared scale rho for the {model.name!r} model")
    norms = np.array([float(jnp.linalg.norm(v)) for v in state.V])
    if not np.all(np.isfinite(norms)) or np.max(np.abs(norms - 1)) > 1e-8:
        raise fail(f"{name}.V", f"norms {norms.tolist()}", "unit Frobenius norm for every layer (to 1e-8)")
    field_name, scales = (f"{name}.rho_k", state.rho_k) if model.per_layer else (f"{name}.rho", state.rho)
    scales = np.asarray(scales, dtype=np.float64)
    shape = (net.depth,) if model.per_layer else ()
    if scales.shape != shape:
        raise fail(field_name, f"shape {scales.shape}", f"shape {shape} to match the network")
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise fail(field_name, scales.tolist(), "finite scales > 0 (as model.state requires)")
