"""A regime compiled to JAX: the vector field on States, ρ_eq, invariants, Jacobians."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from jaxtyping import Array, Float

from . import _symbolic as sym
from ._data import Dataset
from ._errors import InputError, check_int, check_real, fail
from ._network import Network
from ._state import State

LOSS_NAMES = tuple(sym.LOSSES)


def available_models() -> tuple[str, ...]:
    """Names of the regimes defined in ``models/`` (one file each)."""
    import flowsim.models as pkg

    return tuple(sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")))


def _check_lam(lam) -> float:
    return check_real("lam", lam, "a finite real number >= 0 (the weight-decay strength)", lambda v: v >= 0)


def load_model(name: str, lam: float = 0.0, loss: str = "square") -> "Model":
    """Load the regime `name` from ``models/`` and derive its flow for `loss`.

    **Arguments:**

    - `name`: one of :func:`available_models` (``"normalized"``, ``"unnormalized"``, ``"weightnorm"``).
    - `lam`: weight decay λ ≥ 0.
    - `loss`: ``"square"`` (the default, ``(y − u)²``), ``"exponential"`` or ``"logistic"``.

    **Returns:** a :class:`flowsim.Model`.
    """
    names = available_models()
    if not isinstance(name, str) or name not in names:
        raise fail("name", name, f"one of {names}")
    if not isinstance(loss, str) or loss not in LOSS_NAMES:
        raise fail("loss", loss, f"one of {LOSS_NAMES}")
    lam = _check_lam(lam)
    regime = importlib.import_module(f"flowsim.models.{name}").REGIME
    return Model(regime, lam, loss)


class _Compiled:
    """The sympy expressions of one (regime, loss, depth) turned into jax.numpy functions."""

    def __init__(self, regime: sym.Regime, loss: str, depth: int):
        d = sym.derive(regime, loss)
        self.derivation = d
        self.per_layer = regime.per_layer
        self.depth = depth
        mods = [{"cosh": jnp.cosh}, jnp]
        self.weight = sp.lambdify((sym.rho, sym.f, sym.y), d.weight, modules=mods)
        if regime.per_layer:
            self.scale_sample = sp.lambdify((sym.rho, sym.s, sym.f, sym.y), d.scale_sample, modules=mods)
        else:
            ss = sp.lambdify((sym.rho, sym.f, sym.y), d.scale_sample, modules=mods)
            self.scale_sample = lambda rho, s, f, y: ss(rho, f, y)
        self.scale_reg = sp.lambdify((sym.s if regime.per_layer else sym.rho, sym.lam), d.scale_reg, modules=mods)
        self.direction_factor = sp.lambdify((sym.s,), d.direction_factor, modules=mods)
        self.loss = sp.lambdify((sym.u, sym.y), sym.LOSSES[loss], modules=mods)
        self.regularizer = sp.lambdify((sym.s, sym.lam), regime.regularizer(sym.s, sym.lam), modules=mods)
        closed = sym.rho_equilibrium(d, regime.per_layer, depth)
        if closed is not None:
            expr, used = closed
            names = list(used)
            fn = sp.lambdify([sym.N, sym.lam, *names], expr, modules=mods)
            powers = [used[m] for m in names]

            def rho_eq_closed(f, y, lam):
                aggs = [jnp.sum(f**a * y**b) for a, b in powers]
                return fn(f.shape[0], lam, *aggs)

            self.rho_eq = rho_eq_closed
        else:
            self.rho_eq = self._rho_eq_numeric

    def _balanced_scale_rate(self, rho, f, y, lam):
        """ρ_k · dρ_k/dt with all layers balanced (per-layer), or dρ/dt (shared), at fixed V."""
        if self.per_layer:
            s = rho ** (1.0 / self.depth)
            return s * (jnp.sum(self.scale_sample(rho, s, f, y)) + self.scale_reg(s, lam))
        return jnp.sum(self.scale_sample(rho, rho, f, y)) + self.scale_reg(rho, lam)

    def _rho_eq_numeric(self, f, y, lam):
        # Largest stable root (sign change + to −) on a log grid, refined by bisection.
        grid = jnp.logspace(-8, 8, 321)
        h = jax.vmap(lambda r: self._balanced_scale_rate(r, f, y, lam))(grid)
        change = (h[:-1] > 0) & (h[1:] <= 0)
        idx = jnp.where(change.any(), jnp.max(jnp.where(change, jnp.arange(320), -1)), 0)
        lo, hi = grid[idx], grid[idx + 1]

        def body(_, bounds):
            lo, hi = bounds
            mid = jnp.sqrt(lo * hi)
            pos = self._balanced_scale_rate(mid, f, y, lam) > 0
            return jnp.where(pos, mid, lo), jnp.where(pos, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 80, body, (lo, hi))
        return jnp.where(change.any(), jnp.sqrt(lo * hi), jnp.nan)


@functools.lru_cache(maxsize=None)
def _compiled(regime: sym.Regime, loss: str, depth: int) -> _Compiled:
    return _Compiled(regime, loss, depth)


class Model(eqx.Module):
    """A regime of the flow with its weight decay and loss, compiled to JAX on demand.

    Build with :func:`flowsim.load_model`. Its ``lam`` is a leaf, so models can be vmapped over λ.
    """

    regime: sym.Regime = eqx.field(static=True)
    lam: Float[Array, ""]
    loss: str = eqx.field(static=True)

    def __init__(self, regime: sym.Regime, lam: float, loss: str = "square"):
        self.regime = regime
        self.lam = jnp.asarray(lam, dtype=jnp.float64)
        self.loss = loss

    def __repr__(self) -> str:
        return f"Model({self.name!r}, lam={float(self.lam):g}, loss={self.loss!r})"

    @property
    def name(self) -> str:
        """The regime's name."""
        return self.regime.name

    @property
    def per_layer(self) -> bool:
        """Whether the state has one scale per layer (``rho_k``) rather than one shared ``rho``."""
        return self.regime.per_layer

    @property
    def derivation(self) -> sym.Derivation:
        """The symbolic derivation (sympy expressions) behind the compiled field."""
        return sym.derive(self.regime, self.loss)

    @property
    def equations(self) -> dict:
        """The flow as sympy equations: ``"scale"`` (ρ̇ or ρ̇_k), ``"direction"`` (V̇_k), ``"weight"``."""
        return self.derivation.equations

    def latex(self) -> str:
        """The equations as a LaTeX ``aligned`` block."""
        lines = [sp.latex(eq).replace("=", "&=", 1) for eq in self.equations.values()]
        return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"

    @property
    def singular(self) -> bool:
        """Whether the equilibria form a continuum (the field vanishes on every interpolating point).

        Derived symbolically; true without weight decay (λ = 0), the paper's singular case for BN.
        """
        return self.derivation.singular_without_decay and float(self.lam) == 0.0

    def analysis(self, depth: int = 2) -> dict:
        """Symbolic facts about the flow.

        **Arguments:**

        - `depth`: the number of layers L the closed form of ρ_eq is derived for (per-layer models only:
          with balanced layers ρ_eq depends on L; the shared-scale model's does not).

        **Returns:** a dict with ``rho_eq`` (closed form in the aggregates ``M_ab = Σ_n f_n^a y_n^b``,
        ``None`` when there is none), ``relaxation_rate`` (``−∂ρ̇/∂ρ`` at fixed V, per sample, plus the
        regularizer part), ``invariant`` (``(Q, c)`` with ``dQ/dt = c Q``, or ``None``), and ``singular``.
        """
        depth = check_int("depth", depth, "an integer >= 1", lambda v: v >= 1)
        d = self.derivation
        closed = sym.rho_equilibrium(d, self.per_layer, depth=depth)
        return {
            "rho_eq": None if closed is None else closed[0],
            "relaxation_rate": d.relaxation_rate,
            "invariant": d.invariant,
            "singular": self.singular,
        }

    # ---- states ---------------------------------------------------------------------------------
    def init(self, net: Network, key=0, scale: float = 1.0) -> State:
        """A random initial State: each ``V_k`` Gaussian then scaled to unit Frobenius norm.

        **Arguments:**

        - `net`: the :class:`flowsim.Network`.
        - `key`: an integer seed or a ``jax.random`` key.
        - `scale`: the overall scale ``ρ(0) > 0``; per-layer models get balanced ``ρ_k = scale^{1/L}``.

        **Returns:** a :class:`flowsim.State`.
        """
        _check_network(net)
        check_real("scale", scale, "a finite number > 0 (the initial overall scale ρ)", lambda v: v > 0)
        if isinstance(key, (int, np.integer)):
            key = jax.random.PRNGKey(int(key))
        keys = jax.random.split(key, net.depth)
        V = []
        for k, shape in zip(keys, net.shapes):
            v = jax.random.normal(k, shape, dtype=jnp.float64)
            V.append(v / jnp.linalg.norm(v))
        if self.per_layer:
            return self.state(V=V, rho_k=[float(scale) ** (1.0 / net.depth)] * net.depth)
        return self.state(V=V, rho=float(scale))

    def state(self, V: Sequence, rho: float | None = None, rho_k: Sequence[float] | None = None) -> State:
        """A validated State from directions and scales.

        **Arguments:**

        - `V`: one matrix per layer, each of unit Frobenius norm (to 1e-8).
        - `rho`: the shared scale (``normalized``), or the overall scale split evenly over layers.
        - `rho_k`: per-layer scales (per-layer models only), each > 0.

        **Returns:** a :class:`flowsim.State`.
        """
        if isinstance(V, (np.ndarray, jax.Array)) or not isinstance(V, Sequence) or len(V) == 0:
            raise fail("V", type(V).__name__, "a non-empty list of 2-D arrays, one per layer")
        Vs = []
        for k, v in enumerate(V):
            v = np.asarray(v, dtype=np.float64)
            if v.ndim != 2:
                raise fail(f"V[{k}]", f"array of shape {v.shape}", "a 2-D matrix")
            if not np.all(np.isfinite(v)):
                raise fail(f"V[{k}]", "non-finite entries", "finite values")
            norm = float(np.linalg.norm(v))
            if abs(norm - 1.0) > 1e-8:
                raise fail(f"V[{k}]", f"Frobenius norm {norm:.10g}", "unit Frobenius norm (to 1e-8)")
            Vs.append(jnp.asarray(v))
        for k in range(1, len(Vs)):
            if Vs[k].shape[1] != Vs[k - 1].shape[0]:
                raise fail(f"V[{k}]", f"shape {Vs[k].shape}", f"{Vs[k - 1].shape[0]} columns to follow V[{k - 1}]")
        L = len(Vs)
        if self.per_layer:
            if rho_k is None and rho is None:
                raise fail("rho_k", None, f"{L} per-layer scales for the {self.name!r} model")
            if rho_k is None:
                _positive("rho", rho)
                rho_k = [float(rho) ** (1.0 / L)] * L
            if rho is not None and rho_k is not None and not np.isclose(np.prod(rho_k), rho, rtol=1e-12):
                raise fail("rho", rho, f"the product of rho_k ({np.prod(rho_k):g}) or None")
            rk = np.asarray(rho_k, dtype=np.float64)
            if rk.shape != (L,) or not np.all(np.isfinite(rk)) or np.any(rk <= 0):
                raise fail("rho_k", rho_k, f"{L} finite positive per-layer scales")
            rk = jnp.asarray(rk)
            return State(tuple(Vs), jnp.prod(rk), rk)
        if rho_k is not None:
            raise fail("rho_k", rho_k, f"None: the {self.name!r} model has one shared scale `rho`")
        _positive("rho", rho)
        return State(tuple(Vs), jnp.asarray(float(rho), dtype=jnp.float64), None)

    # ---- the compiled flow ----------------------------------------------------------------------
    def compiled(self, net: Network) -> _Compiled:
        """The jax.numpy functions compiled from the symbolic derivation for this network's depth."""
        return _compiled(self.regime, self.loss, net.depth)

    def vector_field(self, net: Network, data: Dataset) -> Callable[[float, State], State]:
        """The flow as a jittable ``(t, State) -> State`` (the State-shaped time derivative).

        **Arguments:**

        - `net`: the :class:`flowsim.Network`.
        - `data`: the :class:`flowsim.Dataset`; its dimension must equal ``net.widths[0]``.

        **Returns:** a function of ``(t, state)``; one forward pass and one VJP per call.
        """
        check_problem(net, data)
        x, yv = jnp.asarray(data.x), jnp.asarray(data.y)
        return lambda t, state: field(self, net, x, yv, state)

    def rho_eq(self, net: Network, data: Dataset, state: State) -> Float[Array, ""]:
        """ρ_eq(V): the scale at which the scale equation vanishes with V fixed (balanced if per-layer).

        Closed form where sympy finds one (``Σ y f / (λ + Σ f²)`` for ``normalized`` with the square
        loss; negative when the data are not on average separable, ``Σ y f < 0``), else the largest stable
        root found numerically (NaN when there is no positive stable root, e.g. not on average separable).
        """
        check_problem(net, data)
        check_state(self, net, state)
        f = net._forward(state.V, jnp.asarray(data.x))
        return self.compiled(net).rho_eq(f, jnp.asarray(data.y), self.lam)

    def invariants(self, state: State) -> Float[Array, " Lm1"]:
        """Layer-balance quantities ``ρ_k² − ρ_1²`` for ``k = 2..L`` (per-layer models)."""
        if not self.per_layer:
            raise InputError(f"argument `state`: the {self.name!r} model has one shared scale and no layer balance")
        if not isinstance(state, State) or state.rho_k is None:
            raise fail("state", type(state).__name__, "a per-layer flowsim.State")
        return state.rho_k[1:] ** 2 - state.rho_k[0] ** 2

    def invariant_rate(self) -> float:
        """The derived rate c of ``d/dt (ρ_k² − ρ_j²) = c (ρ_k² − ρ_j²)`` (``−4λ``)."""
        inv = self.derivation.invariant
        if inv is None:
            raise InputError(f"argument `model`: the {self.name!r} model has no layer-balance law")
        return float(inv[1].subs(sym.lam, float(self.lam)))

    def jacobian(self, net: Network, data: Dataset, state: State):
        """The Jacobian of the flattened field at `state`, and its eigenvalues.

        **Returns:** ``(J, eigenvalues)`` as numpy arrays; coordinates are those of
        ``jax.flatten_util.ravel_pytree(state)``.
        """
        from jax.flatten_util import ravel_pytree

        check_problem(net, data)
        check_state(self, net, state)
        y0, unravel = ravel_pytree(state)
        x, yv = jnp.asarray(data.x), jnp.asarray(data.y)
        J = jax.jacfwd(lambda z: ravel_pytree(field(self, net, x, yv, unravel(z)))[0])(y0)
        J = np.asarray(J)
        return J, np.linalg.eigvals(J)


def field(model: Model, net: Network, x, y, state: State, eps: float | None = None) -> State:
    """The State-shaped time derivative at `state` (internal; `eps` smooths σ′ for regularized solves)."""
    c = model.compiled(net)
    f, pullback = jax.vjp(lambda V_: net._forward(V_, x, eps), tuple(state.V))
    rho = jnp.prod(state.rho_k) if model.per_layer else state.rho
    (g,) = pullback(c.weight(rho, f, y) * jnp.ones_like(f))

    def tangent(Vk, Gk):  # S_k G with ‖V_k‖² in the denominator, so the exact flow keeps ‖V_k‖ fixed
        return Gk - Vk * (jnp.vdot(Vk, Gk) / jnp.vdot(Vk, Vk))

    if model.per_layer:
        rk = state.rho_k
        sdot = jnp.stack(
            [jnp.sum(c.scale_sample(rho, rk[k], f, y)) + c.scale_reg(rk[k], model.lam) for k in range(len(state.V))]
        )
        Vdot = tuple(-c.direction_factor(rk[k]) * tangent(Vk, gk) for k, (Vk, gk) in enumerate(zip(state.V, g)))
        return State(Vdot, rho * jnp.sum(sdot / rk), sdot)
    rdot = jnp.sum(c.scale_sample(rho, rho, f, y)) + c.scale_reg(rho, model.lam)
    Vdot = tuple(-c.direction_factor(rho) * tangent(Vk, gk) for Vk, gk in zip(state.V, g))
    return State(Vdot, rdot, None)


def _positive(name, value):
    check_real(name, value, "a finite number > 0", lambda v: v > 0)


def _check_network(net):
    if not isinstance(net, Network):
        raise fail("net", type(net).__name__, "a flowsim.Network")


def check_problem(net: Network, data: Dataset) -> None:
    """Raise unless `net` is a Network and `data` a Dataset of matching input dimension."""
    _check_network(net)
    if not isinstance(data, Dataset):
        raise fail("data", type(data).__name__, "a flowsim.Dataset")
    if data.dim != net.widths[0]:
        raise fail("data", f"inputs of dimension {data.dim}", f"dimension {net.widths[0]} = net.widths[0]")


def check_state(model: Model, net: Network, state: State, name: str = "state") -> None:
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
