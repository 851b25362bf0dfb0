import jax

import flowsim  # noqa: F401  (turns on float64)

jax.config.update("jax_numpy_rank_promotion", "raise")
assert jax.config.jax_enable_x64
