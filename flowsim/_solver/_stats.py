"""``RunStats``: the facts of one run, with the same fields and meanings for every solver and for GD/SGD."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class RunStats(Mapping):
    """What a run did, as a typed, read-only record (also readable as a mapping: ``stats["steps"]``).

    Every field has one meaning for every method; a field that does not apply to a method is ``None``.

    Fields of every run:

    - `method`: ``"rosenbrock"`` (flowsim's compiled stiff solver, the default), ``"tsit5"``, ``"dopri5"``,
      ``"dopri8"``, ``"kvaerno5"`` (diffrax), or ``"gd"``, ``"sgd"``, ``"gd+batchnorm"``, ``"sgd+batchnorm"``.
    - `status`: ``"ok"`` (reached `t_final` = t1), ``"steady_state"`` (stopped at a steady state),
      ``"max_steps"``, ``"nonfinite"`` (a non-finite field or state), ``"diverged"`` (GD/SGD), ``"chattering"``
      (the exact flow's events cycled in place: see `failure`), or ``"failed"``.
    - `failure`: a sentence saying what went wrong and what to try, or ``None``.
    - `steps`: accepted solver steps, or GD/SGD steps taken.
    - `t_final`: the time reached (flow time; ``lr · steps`` for GD/SGD).
    - `wall_time`: seconds, compilation included for a first call.
    - `switches`: sign changes of hidden pre-activations between consecutive saved states (a lower bound on
      the kinks crossed: several crossings between two saves count once or not at all).
    - `pinned`: hidden pre-activations (over all samples) within `pin_tol` of zero at the last saved state:
      those the flow slides on (``|z| ≤ 10 ε`` for a smoothed field, ``≤ 1e-9·scale`` otherwise).
    - `sliding_time`: total time between consecutive saves whose later state has a pinned pre-activation.

    Fields of flows (``None`` for GD/SGD):

    - `rtol`, `atol`: tolerances; `smoothing`: the width ε of the smoothed σ′ (``None``: the raw field; 0: the
      exact flow).
    - `rejected_steps`: steps rejected by the error test.
    - `jacobians`: Jacobians built (each with an LU factorization), counted in accepted steps
      (``rosenbrock`` only; a rejected step's work is not counted).
    - `steady_state`: whether the steady-state test stopped the run.
    - `final_speed`: ``‖ẋ‖`` of the integrated field at the last saved state.
    - `max_norm_drift`: the largest ``| ‖V_k‖ − 1 |`` over the saves before projection onto the spheres.
    - `crossings`, `entries`, `exits`: events of the exact flow (``smoothing=0``; ``None`` otherwise): hidden
      pre-activations that crossed zero, that came to zero and slid on it, and that left a sliding set.
    - `max_pinned`: the largest number of pre-activations sliding at once (exact flow).
    - `unresolved`: events of the exact flow whose mode was not resolved: the bounded least squares or the
      consistency pass that chooses it stopped at its iteration cap, and the segment that follows uses the
      best mode found (0 in every run measured so far; ``simulate`` warns when it is not).
    - `max_balance_drift`: the largest relative deviation from the derived layer-balance law before
      projection (per-layer models with a balance law), else ``None``; `balance_enforced`: whether the
      scales were put back on it.

    Fields of GD/SGD runs (``None`` for flows): `lr`, `batch_size`, `momentum`, `seed`, `record_every`,
    `batchnorm`, `bn_affine`, `rho_measure` (how ρ is measured with real batch normalization).

    Fields of the problem: `model`, `lam`, `loss`.
    """

    method: str
    status: str = "ok"
    failure: str | None = None
    steps: int | None = None
    t_final: float | None = None
    wall_time: float | None = None
    switches: int | None = None
    pinned: int | None = None
    sliding_time: float | None = None
    model: str | None = None
    lam: float | None = None
    loss: str | None = None
    rtol: float | None = None
    atol: float | None = None
    smoothing: float | None = None
    rejected_steps: int | None = None
    jacobians: int | None = None
    steady_state: bool | None = None
    final_speed: float | None = None
    max_norm_drift: float | None = None
    max_balance_drift: float | None = None
    crossings: int | None = None
    entries: int | None = None
    exits: int | None = None
    max_pinned: int | None = None
    unresolved: int | None = None
    balance_enforced: bool | None = None
    lr: float | None = None
    batch_size: int | None = None
    momentum: float | None = None
    seed: int | None = None
    record_every: int | None = None
    batchnorm: bool | None = None
    bn_affine: bool | None = None
    rho_measure: str | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)

    def replace(self, **changes) -> RunStats:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.items() if v is not None)
        return f"RunStats({shown})"


_FIELDS = tuple(f.name for f in dataclasses.fields(RunStats))


# Status codes of a solve (stored in sweep files; RunStats.status holds the names).
OK, STEADY, MAX_STEPS, NONFINITE, FAILED, CHATTERING, NOT_RUN = 0, 1, 2, 3, 4, 5, -1
STATUS_NAMES = {
    OK: "ok",
    STEADY: "steady_state",
    MAX_STEPS: "max_steps",
    NONFINITE: "nonfinite",
    FAILED: "failed",
    CHATTERING: "chattering",
    NOT_RUN: "not_run",
}
FAILURES = (MAX_STEPS, NONFINITE, FAILED, CHATTERING)


def failure_message(status: int, t_final: float, t1: float, max_steps: int, method: str = "rosenbrock") -> str | None:
    """The sentence a failed solve reports, saying what to try (``None`` when it did not fail)."""
    if status == MAX_STEPS:
        # explicit solvers stall where the smoothed ReLU field is stiff; the default solver is built for it
        advice = "" if method == "rosenbrock" else ", or use the default solver (solver='auto')"
        return (
            f"reached max_steps = {max_steps} at t = {t_final:.6g} of t1 = {t1:g}; raise max_steps or loosen "
            f"rtol/atol{advice}"
        )
    if status == NONFINITE:
        return f"non-finite vector field after t = {t_final:.6g}; reduce the initial scale or the tolerances"
    if status == CHATTERING:
        return (
            f"the exact flow's events cycled at t = {t_final:.6g}: event after event, each a step below 1e-8 of t "
            "after the last, chose modes that undo each other (the mode chosen there is not consistent with the "
            "exact velocity). Use smoothing=eps > 0 for this run, and please report it"
        )
    if status == FAILED:
        return f"the solver stopped at t = {t_final:.6g} of t1 = {t1:g} (a diffrax failure)"
    return None


def flow_stats(
    member: Mapping,
    *,
    method: str,
    model: str,
    lam: float,
    loss: str,
    rtol: float,
    atol: float,
    smoothing: float | None,
    max_steps: int,
    t1: float,
    balance_law: bool,
    balance_enforced: bool,
    wall_time: float | None,
) -> RunStats:
    """The [`flowsim.RunStats`][flowsim.RunStats] of one solve from its per-member outputs (shared by simulate and sweep
    files)."""
    status = int(member["status"])
    jacobians = int(member["jacobians"])
    exact = {
        k: (None if int(member.get(k, -1)) < 0 else int(member[k]))
        for k in ("crossings", "entries", "exits", "max_pinned", "unresolved")
    }
    return RunStats(
        method=method,
        status=STATUS_NAMES[status],
        failure=failure_message(status, float(member["t_final"]), t1, max_steps, method),
        steps=int(member["steps"]),
        t_final=float(member["t_final"]),
        wall_time=wall_time,
        switches=int(member["switches"]),
        pinned=int(member["pinned"]),
        sliding_time=float(member["sliding_time"]),
        model=model,
        lam=float(lam),
        loss=loss,
        rtol=rtol,
        atol=atol,
        smoothing=smoothing,
        rejected_steps=int(member["rejected_steps"]),
        jacobians=None if jacobians < 0 else jacobians,
        steady_state=status == STEADY,
        final_speed=float(member["final_speed"]),
        max_norm_drift=float(member["norm_drift"]),
        max_balance_drift=float(member["balance_drift"]) if balance_law else None,
        balance_enforced=balance_law and balance_enforced,
        **exact,
    )
