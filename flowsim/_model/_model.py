"""A regime compiled to JAX: the vector field on States, ρ_eq, invariants, Jacobians."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import _symbolic as sym
from .._data import Dataset
from .._errors import Checked, InputError, check_int, check_real, fail
from ._checks import check_network, check_positive, check_problem, check_state
from ._compiled import Compiled, compiled
from ._field import field, resolve_smoothing
from ._filippov import exact_field
from ._network import Network
from ._state import State


class Model(eqx.Module):
    """A regime of the flow with its weight decay and loss, compiled to JAX on demand.

    Build with [`flowsim.load_model`][flowsim.load_model]. Its ``lam`` is a leaf, so models can be vmapped over λ.
    """

    regime: sym.Regime = eqx.field(static=True)
    lam: Float[Array, ""]
    loss: str = eqx.field(static=True)

    def __init__(self, regime: sym.Regime, lam: float | Float[Array, ""], loss: str = "square"):
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
        return sym.latex(self.equations.values())

    @property
    def singular(self) -> bool:
        """Whether the equilibria form a continuum (the field vanishes on every interpolating point).

        Derived symbolically; true without weight decay (λ = 0), the paper's singular case for BN.
        """
        return self.derivation.singular_without_decay and float(self.lam) == 0.0

    def analysis(self, depth: Checked[int] = 2) -> dict:
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
    def init(
        self, net: Checked[Network], *, seed: Checked[int | jax.Array] = 0, scale: Checked[float] = 1.0, key=None
    ) -> State:
        """A random initial State: each ``V_k`` Gaussian then scaled to unit Frobenius norm.

        **Arguments:**

        - `net`: the [`flowsim.Network`][flowsim.Network].
        - `seed`: an integer seed or a ``jax.random`` key (the same seed gives the same State).
        - `scale`: the overall scale ``ρ(0) > 0``; per-layer models get balanced ``ρ_k = scale^{1/L}``.
        - `key`: deprecated name of `seed`.

        **Returns:** a [`flowsim.State`][flowsim.State].
        """
        if key is not None:
            warnings.warn(
                "model.init(key=...) is deprecated: pass seed=... (an integer or a jax.random key)",
                DeprecationWarning,
                stacklevel=2,
            )
            seed = key
        check_network(net)
        check_real("scale", scale, "a finite number > 0 (the initial overall scale ρ)", lambda v: v > 0)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer, jax.Array)):
            raise fail("seed", seed, "an integer seed or a jax.random key")
        key = jax.random.PRNGKey(int(seed)) if isinstance(seed, (int, np.integer)) else seed
        keys = jax.random.split(key, net.depth)
        V = []
        for k, shape in zip(keys, net.shapes):
            v = jax.random.normal(k, shape, dtype=jnp.float64)
            V.append(v / jnp.linalg.norm(v))
        if self.per_layer:
            return self.state(V=V, rho_k=[float(scale) ** (1.0 / net.depth)] * net.depth)
        return self.state(V=V, rho=float(scale))

    def state(
        self,
        V: Checked[Sequence],
        rho: Checked[float | None] = None,
        rho_k: Checked[Sequence[float] | None] = None,
    ) -> State:
        """A validated State from directions and scales.

        **Arguments:**

        - `V`: one matrix per layer, each of unit Frobenius norm (to 1e-8).
        - `rho`: the shared scale (``normalized``), or the overall scale split evenly over layers.
        - `rho_k`: per-layer scales (per-layer models only), each > 0.

        **Returns:** a [`flowsim.State`][flowsim.State].
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
                check_positive("rho", rho)
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
        check_positive("rho", rho)
        return State(tuple(Vs), jnp.asarray(float(rho), dtype=jnp.float64), None)

    # ---- the compiled flow ----------------------------------------------------------------------
    def compiled(self, net: Network) -> Compiled:
        """The jax.numpy functions compiled from the symbolic derivation for this network's depth."""
        return compiled(self.regime, self.loss, net.depth)

    def vector_field(
        self, net: Checked[Network], data: Checked[Dataset], smoothing: Checked[float | str | None] = "auto"
    ) -> Callable[[float, State], State]:
        """The flow as a jittable ``(t, State) -> State`` (the State-shaped time derivative): exactly the field
        ``fs.simulate`` integrates with the same `smoothing`, for users who drive their own solver.

        **Arguments:**

        - `net`: the [`flowsim.Network`][flowsim.Network].
        - `data`: the [`flowsim.Dataset`][flowsim.Dataset]; its dimension must equal ``net.widths[0]``.
        - `smoothing`: as for ``fs.simulate``: ``"auto"`` (ε = 1e-5 for ReLU networks, none for linear ones),
          a width ε > 0 (σ′ replaced by ½(1 + tanh(z/ε)) in the field), ``None`` for the raw field
          (σ′ = 1[z > 0]), or 0 for the exact ε → 0 velocity: where hidden pre-activations sit at zero (to
          1e-10 relative to the layer's scale), the element of least norm, in the model's metric, of the convex
          hull of the one-sided fields over their sign patterns (exact with one hidden layer; the multilinear
          box relaxation, a point of that hull, with more), elsewhere the ordinary field. The metrics:
          ``normalized`` ρ̇² + Σ_k ‖V̇_k‖²; ``unnormalized`` Σ_k ρ̇_k² + ρ_k² ‖V̇_k‖² (that of the raw
          weights); ``weightnorm`` Σ_k ρ̇_k² + ‖V̇_k‖².

        **Returns:** a function of ``(t, state)``: one forward pass and one VJP per call (the exact velocity
        also solves a bounded least-squares problem over the pinned pre-activations).
        """
        check_problem(net, data)
        eps = resolve_smoothing(net, smoothing)
        x, yv = jnp.asarray(data.x), jnp.asarray(data.y)
        if eps == 0.0:
            return lambda t, state: exact_field(self, net, x, yv, state)
        return lambda t, state: field(self, net, x, yv, state, eps)

    def rho_eq(self, net: Checked[Network], data: Checked[Dataset], state: Checked[State]) -> Float[Array, ""]:
        """ρ_eq(V): the scale at which the scale equation vanishes with V fixed (balanced if per-layer).

        Closed form where sympy finds one (``Σ y f / (λ + Σ f²)`` for ``normalized`` with the square
        loss; negative when the data are not on average separable, ``Σ y f < 0``), else the largest stable
        root found numerically (NaN when there is no positive stable root, e.g. not on average separable).
        """
        check_problem(net, data)
        check_state(self, net, state)
        f = net._forward(state.V, jnp.asarray(data.x))
        return self.compiled(net).rho_eq(f, jnp.asarray(data.y), self.lam)

    def invariants(self, state: Checked[State]) -> Float[Array, " Lm1"]:
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

    def jacobian(self, net: Checked[Network], data: Checked[Dataset], state: Checked[State]):
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
