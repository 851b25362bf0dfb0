"""The bias-free MLP with scalar output, written in jax.numpy."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._errors import Checked, fail

ACTIVATIONS = ("relu", "linear")


def _smooth_relu(eps: float):
    """ReLU whose derivative is the smooth step ½(1 + tanh(z/ε)) (Sotomayor–Teixeira regularization).

    The forward value is exact; only the vector field (through the VJP) sees the smoothed switch.
    """

    @jax.custom_jvp
    def relu(z):
        return jnp.maximum(z, 0.0)

    @relu.defjvp
    def relu_jvp(primals, tangents):
        (z,), (dz,) = primals, tangents
        return jnp.maximum(z, 0.0), 0.5 * (1.0 + jnp.tanh(z / eps)) * dz

    return relu


class Network(eqx.Module):
    """A bias-free multilayer perceptron ``f(W; x) = W_L σ(W_{L-1} ⋯ σ(W_1 x))`` with scalar output.

    The network holds no weights: it is the architecture, and the weights (or their unit-norm
    directions ``V_k``) are passed to its methods. Its methods are jit-compiled once per network
    shape and data shape.

    **Arguments:**

    - `widths`: ``(d_0, d_1, ..., d_L)`` with ``d_0`` the input dimension and ``d_L = 1``; layer
      ``k`` has weight shape ``(d_k, d_{k-1})``.
    - `activation`: ``"relu"`` (the default) or ``"linear"`` (the identity, for linear-network checks).
    """

    widths: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(self, widths: Checked[Sequence[int]], activation: Checked[str] = "relu"):
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence | np.ndarray):
            raise fail("widths", widths, "a sequence of positive integers (d_0, ..., d_L) with d_L = 1")
        widths = tuple(widths)
        if len(widths) < 2:
            raise fail("widths", widths, "at least two widths: the input dimension and the output width 1")
        for w in widths:
            if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
                raise fail("widths", widths, "integer widths")
            if w < 1:
                raise fail("widths", widths, "every width >= 1 (a zero width leaves no path from input to output)")
        if widths[-1] != 1:
            raise fail("widths", widths, "output width d_L = 1 (the network has a scalar output)")
        if activation not in ACTIVATIONS:
            raise fail("activation", activation, f"one of {ACTIVATIONS}")
        self.widths = tuple(int(w) for w in widths)
        self.activation = activation

    @property
    def depth(self) -> int:
        """Number of weight layers L."""
        return len(self.widths) - 1

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Weight shapes ``(d_k, d_{k-1})`` for ``k = 1..L``."""
        return tuple((self.widths[k + 1], self.widths[k]) for k in range(self.depth))

    @property
    def n_params(self) -> int:
        """Number of weights."""
        return sum(a * b for a, b in self.shapes)

    def _sigma(self, z):
        return jnp.maximum(z, 0.0) if self.activation == "relu" else z

    def _forward(self, V, x, eps: float | None = None, gates=None):
        """f(V; x) for all rows; with `eps`, ReLU's derivative (only) is the smooth step of width ε; with
        `gates` (one array per hidden layer, shapes ``(N, d_k)``), it is those values (a one-sided field)."""
        sigma = _smooth_relu(eps) if eps and self.activation == "relu" else self._sigma
        a = x
        for k, Vk in enumerate(tuple(V)[:-1]):
            z = a @ Vk.T
            # with gates: the value max(z, 0) exactly, the derivative the gate (the second term is zero in value)
            a = (
                sigma(z)
                if gates is None
                else jax.lax.stop_gradient(self._sigma(z)) + gates[k] * (z - jax.lax.stop_gradient(z))
            )
        return (a @ V[-1].T)[:, 0]

    @eqx.filter_jit
    def forward(
        self, V: Sequence[Float[Array | np.ndarray, "_dk _dkm1"]], x: Float[Array | np.ndarray, "N d"]
    ) -> Float[Array, " N"]:
        """The outputs ``f(V; x_n)`` for all samples.

        **Arguments:**

        - `V`: one weight matrix per layer, shapes [`flowsim.Network.shapes`][flowsim.Network.shapes].
        - `x`: inputs, shape ``(N, d_0)``.

        **Returns:** shape ``(N,)``.
        """
        return self._forward(tuple(V), x)

    @eqx.filter_jit
    def vjp(
        self,
        V: Sequence[Float[Array | np.ndarray, "_dk _dkm1"]],
        x: Float[Array | np.ndarray, "N d"],
        w: Float[Array | np.ndarray, " N"],
    ):
        """The outputs and the weighted gradient ``Σ_n w_n ∂f_n/∂V_k`` for every layer, in one VJP.

        **Arguments:**

        - `V`: one weight matrix per layer.
        - `x`: inputs, shape ``(N, d_0)``.
        - `w`: per-sample weights, shape ``(N,)``.

        **Returns:** ``(f, grads)`` with ``f`` of shape ``(N,)`` and ``grads`` a tuple shaped like `V`.
        """
        f, pullback = jax.vjp(lambda V_: self._forward(V_, x), tuple(V))
        return f, pullback(w)[0]

    @eqx.filter_jit
    def preactivations(self, V: Sequence[Float[Array | np.ndarray, "_dk _dkm1"]], x: Float[Array | np.ndarray, "N d"]):
        """The pre-activations ``z_k = V_k a_{k-1}`` of the hidden layers, each of shape ``(N, d_k)``."""
        zs, a = [], x
        for Vk in tuple(V)[:-1]:
            z = a @ Vk.T
            zs.append(z)
            a = self._sigma(z)
        return tuple(zs)

    @eqx.filter_jit
    def features(
        self, V: Sequence[Float[Array | np.ndarray, "_dk _dkm1"]], x: Float[Array | np.ndarray, "N d"]
    ) -> Float[Array, "N h"]:
        """The last hidden layer's activations ``a_{L-1}`` (the input itself for ``L = 1``)."""
        a = x
        for Vk in tuple(V)[:-1]:
            a = self._sigma(a @ Vk.T)
        return a
