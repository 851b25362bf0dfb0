import jax
import pytest

import flowsim  # noqa: F401  (turns on float64)
from helpers import Traced

jax.config.update("jax_numpy_rank_promotion", "raise")
assert jax.config.jax_enable_x64


@pytest.fixture
def no_tracing(monkeypatch):
    """Replace every place where the entry points start JAX work with a tripwire."""
    import flowsim._discrete._sgd as sgd
    import flowsim._solver._simulate as simulate
    import flowsim._solver._sweep as sweep

    def trip(*args, **kwargs):
        raise Traced("reached the computation before the bad argument was rejected")

    monkeypatch.setattr(simulate, "compiled_member", trip)
    monkeypatch.setattr(simulate, "_warn_if_not_separable", trip)
    monkeypatch.setattr(sgd, "_run_jit", trip)
    monkeypatch.setattr(sweep, "compiled_member", trip)
    return trip
