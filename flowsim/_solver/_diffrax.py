"""The one pure diffrax solve that ``fs.simulate`` runs and ``fs.sweep`` vmaps."""

from __future__ import annotations

import diffrax as dfx
import jax.numpy as jnp

from ._options import DIFFRAX_SOLVERS


def diffrax_solve(
    F, z0, t1, ts, rtol, atol, solver, max_steps, steady_state=False, steady_tol=1e-6, progress_meter=None
):
    """One pure diffrax solve of ``ż = F(z)`` saving at `ts` and at the end (vmappable; used by sweeps)."""
    term = dfx.ODETerm(lambda t, z, args: F(z))
    event = None
    if steady_state:

        def cond(t, z, args, **kwargs):
            return jnp.linalg.norm(F(z)) <= steady_tol * (1.0 + jnp.linalg.norm(z))

        event = dfx.Event(cond)
    return dfx.diffeqsolve(
        term,
        DIFFRAX_SOLVERS[solver](),
        0.0,
        t1,
        None,
        z0,
        saveat=dfx.SaveAt(ts=jnp.asarray(ts), t1=True),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        event=event,
        throw=False,
        progress_meter=progress_meter if progress_meter is not None else dfx.NoProgressMeter(),
    )
