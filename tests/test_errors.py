"""flowsim._errors: one error family, and the standard message of a bad argument."""

import pytest

import flowsim as fs
from flowsim._errors import check_int, check_real, fail


def test_errors_are_one_family():
    assert issubclass(fs.InputError, fs.FlowsimError) and issubclass(fs.FlowsimError, ValueError)
    assert issubclass(fs.SolveError, fs.FlowsimError) and issubclass(fs.ResultFileError, fs.FlowsimError)
    err = fs.SolveError("boom", partial="p")
    assert err.partial == "p" and str(err) == "boom"


def test_message_names_the_argument_the_value_and_the_expectation():
    err = fail("lam", "x" * 200, "a number")
    assert isinstance(err, fs.InputError) and isinstance(err, TypeError)
    msg = str(err)
    assert msg.startswith("argument `lam`: got 'xxx") and msg.endswith("expected a number.")
    assert "..." in msg and len(msg) < 160  # long values are cut
    assert check_real("a", 2, "x") == 2.0 and isinstance(check_real("a", 2, "x"), float)
    assert check_int("n", 3, "x") == 3
    for bad in (True, "1", float("nan"), None):
        with pytest.raises(fs.InputError, match="`a`"):
            check_real("a", bad, "a finite number")
    with pytest.raises(fs.InputError, match="`n`"):
        check_int("n", 2.0, "an integer")
    with pytest.raises(fs.InputError, match="`n`"):
        check_int("n", 3, "an even integer", lambda v: v % 2 == 0)
