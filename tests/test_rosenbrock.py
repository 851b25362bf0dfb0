"""fs.RosenbrockW as a diffrax solver: order, classic stiff problems against scipy's Radau, vmap, events."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
from scipy.integrate import solve_ivp

import flowsim as fs


def robertson(t, y, args, np=jnp):
    return np.stack(
        [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2]
    )


def van_der_pol(t, y, args, np=jnp):
    return np.stack([y[1], args * (1 - y[0] ** 2) * y[1] - y[0]])


def _radau(f, y0, t1, ts, args=None, rtol=1e-12, atol=1e-14):
    """The reference: scipy's Radau at tight tolerances, on the same field written in numpy."""
    sol = solve_ivp(lambda t, y: f(t, y, args, np=np), (0.0, t1), y0, method="Radau", rtol=rtol, atol=atol, t_eval=ts)
    assert sol.success
    return sol.y.T


def _solve(f, y0, t1, ts, rtol, atol, args=None, solver=None, **kwargs):
    return dfx.diffeqsolve(
        dfx.ODETerm(f),
        solver or fs.RosenbrockW(),
        0.0,
        t1,
        1e-6,
        jnp.asarray(y0),
        args=args,
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        saveat=dfx.SaveAt(ts=jnp.asarray(ts)),
        max_steps=100_000,
        **kwargs,
    )


def test_third_order_with_a_stale_jacobian():
    """A W-method keeps its order with any matrix for J: here J is taken once, at t = 0, for the whole run."""

    def f(t, y, args, np=jnp):
        return np.stack([-(y[0] ** 2) + np.cos(t) * y[1], -2 * y[1] + y[0] * np.sin(t)])

    y0 = jnp.array([1.0, 0.5])
    exact = _radau(f, np.asarray(y0), 2.0, [2.0])[-1]
    # no error test (infinite tolerances), no refresh: the t = 0 Jacobian serves every step
    solver = fs.RosenbrockW(
        root_finder=optx.Chord(rtol=jnp.inf, atol=jnp.inf), max_jacobian_age=10**9, refactor_ratio=jnp.inf
    )
    errors = []
    for n in (20, 40, 80, 160):
        sol = dfx.diffeqsolve(dfx.ODETerm(f), solver, 0.0, 2.0, 2.0 / n, y0, stepsize_controller=dfx.ConstantStepSize())
        errors.append(float(jnp.max(jnp.abs(sol.ys[-1] - exact))))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 2.7), orders


@pytest.mark.parametrize("rtol", [1e-6, 1e-8])
def test_robertson_against_radau(rtol):
    ts = np.array([1e-2, 1.0, 1e2, 1e4, 1e5])
    ref = _radau(robertson, np.array([1.0, 0.0, 0.0]), 1e5, ts, atol=1e-18)
    sol = _solve(robertson, [1.0, 0.0, 0.0], 1e5, ts, rtol, rtol * 1e-4)
    scale = np.max(np.abs(ref), axis=0)  # y2 peaks at 3.6e-5: compare each component on its own scale
    error = np.max(np.abs(np.asarray(sol.ys) - ref) / scale)
    assert error < 300 * rtol, error
    # mass conservation y1 + y2 + y3 = 1 (linear invariant: kept to round-off by any Runge-Kutta-type step)
    assert np.allclose(np.asarray(sol.ys).sum(axis=1), 1.0, atol=1e-12)


def test_van_der_pol_against_radau():
    ts = np.linspace(0.0, 30.0, 7)[1:]
    ref = _radau(van_der_pol, np.array([2.0, 0.0]), 30.0, ts, args=10.0)
    sol = _solve(van_der_pol, [2.0, 0.0], 30.0, ts, 1e-8, 1e-8, args=10.0)
    assert np.max(np.abs(np.asarray(sol.ys) - ref)) < 1e-4


def test_stiff_nonautonomous_against_closed_form():
    """y' = −k (y − cos t): the time-derivative term of the method matters; the closed form is known."""
    k = 1e4

    def f(t, y, args):
        return -k * (y - jnp.cos(t))

    ts = np.array([0.5, 1.0, 2.0])
    sol = _solve(f, [0.0], 2.0, ts, 1e-8, 1e-10)
    exact = (k**2 * np.cos(ts) + k * np.sin(ts)) / (k**2 + 1) - (k**2 / (k**2 + 1)) * np.exp(-k * ts)
    assert np.max(np.abs(np.asarray(sol.ys)[:, 0] - exact)) < 1e-7


def test_vmap_equals_single_solves_and_pytree_state():
    mus = jnp.array([2.0, 5.0, 10.0])

    def f(t, y, args):  # a dict state: the solver works on any pytree
        return {"x": y["v"], "v": args * (1 - y["x"] ** 2) * y["v"] - y["x"]}

    def run(mu):
        sol = dfx.diffeqsolve(
            dfx.ODETerm(f),
            fs.RosenbrockW(),
            0.0,
            10.0,
            1e-3,
            {"x": 2.0, "v": 0.0},
            args=mu,
            stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-8),
            saveat=dfx.SaveAt(t1=True),
        )
        return sol.ys["x"][-1]

    batched = jax.jit(jax.vmap(run))(mus)
    single = jnp.stack([jax.jit(run)(m) for m in mus])
    np.testing.assert_allclose(batched, single, rtol=1e-10)
    ref = [_radau(van_der_pol, np.array([2.0, 0.0]), 10.0, [10.0], args=float(m))[-1, 0] for m in mus]
    np.testing.assert_allclose(single, ref, atol=1e-5)


def test_event_and_throw_false():
    """Events stop the solve as with any diffrax solver; a step limit is reported, not raised, with throw=False."""

    def f(t, y, args):
        return -y

    event = dfx.Event(lambda t, y, args, **kw: y[0] < 0.5)
    sol = _solve(f, [1.0], 10.0, [10.0], 1e-8, 1e-10, event=event)
    assert sol.result == dfx.RESULTS.event_occurred
    sol = dfx.diffeqsolve(
        dfx.ODETerm(f),
        fs.RosenbrockW(),
        0.0,
        10.0,
        1e-3,
        jnp.array([1.0]),
        stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-10),
        max_steps=5,
        throw=False,
    )
    assert sol.result == dfx.RESULTS.max_steps_reached


def test_bad_jacobian_mode():
    with pytest.raises(ValueError, match="jacobian"):
        fs.RosenbrockW(jacobian="sideways")
