"""The stable rank of weight matrices (the low-rank bias of SGD with weight decay)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def stable_rank(W: Float[Array | np.ndarray, "... m n"]) -> Float[Array, "..."]:
    """The stable rank ``‖W‖_F² / ‖W‖_2²`` of a matrix (or of a stack of matrices).

    **Arguments:**

    - `W`: an array (JAX or numpy) whose last two axes are the matrix.

    **Returns:** the stable rank, one per matrix.
    """
    W = jnp.asarray(W)
    s = jnp.linalg.svd(W, compute_uv=False)
    return jnp.sum(s * s, axis=-1) / s[..., 0] ** 2
