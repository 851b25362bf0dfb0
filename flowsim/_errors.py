"""The one error family flowsim raises, so that users can catch ``fs.FlowsimError``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import numpy as np

T = TypeVar("T")

if TYPE_CHECKING:
    Checked = Annotated[T, "validated by the function"]
else:

    class Checked:
        """``Checked[T]``: an argument the function validates itself, raising [`flowsim.InputError`][flowsim.InputError]
        with the argument's name unless it is a valid ``T``.

        Static type checkers read ``T``. At run time it admits any value, so that the runtime type checker the
        tests run (jaxtyping with beartype) lets a wrong value reach that validation, whose messages are part of
        the API; the function's other annotations stay checked.
        """

        def __class_getitem__(cls, tp):
            return Annotated[Any, tp]


class FlowsimError(ValueError):
    """Base class of every error flowsim raises on bad input or a failed run."""


class InputError(FlowsimError, TypeError):
    """An argument has the wrong type, shape or value. Raised before any JAX tracing."""


class SolveError(FlowsimError, RuntimeError):
    """A run failed (non-finite values, step limit, failed step).

    The part computed before the failure is attached as ``partial`` (a [`flowsim.Trajectory`][flowsim.Trajectory]
    or ``None``), so nothing is lost and nothing is truncated silently.
    """

    def __init__(self, message: str, partial: Any = None):
        super().__init__(message)
        self.partial = partial


class ResultFileError(FlowsimError, OSError):
    """A result file is missing, truncated, of another format version, or inconsistent."""


def fail(argument: str, value: Any, expected: str) -> InputError:
    """Build the standard message: which argument, what it was, and what was expected."""
    shown = repr(value)
    if len(shown) > 80:  # both ends: a long path's file name is at its end
        shown = shown[:38] + "..." + shown[-39:]
    return InputError(f"argument `{argument}`: got {shown}; expected {expected}.")


def check_real(argument: str, value: Any, expected: str, ok=lambda v: True) -> float:
    """`value` as a finite float satisfying `ok`, else an [`flowsim.InputError`][flowsim.InputError] (bools are not
    numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise fail(argument, value, expected)
    value = float(value)
    if not (math.isfinite(value) and ok(value)):
        raise fail(argument, value, expected)
    return value


def check_int(argument: str, value: Any, expected: str, ok=lambda v: True) -> int:
    """`value` as an int satisfying `ok`, else an [`flowsim.InputError`][flowsim.InputError]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not ok(int(value)):
        raise fail(argument, value, expected)
    return int(value)
