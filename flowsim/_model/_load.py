"""Finding regimes: the installed ``models/`` files, a [`flowsim.Regime`][flowsim.Regime] object, or a regime file
anywhere."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import pkgutil
import sys

from .. import _symbolic as sym
from .._errors import Checked, fail
from ._checks import check_lam
from ._model import Model

LOSS_NAMES = tuple(sym.LOSSES)


def available_models() -> tuple[str, ...]:
    """Names of the regimes defined in ``models/`` (one file each)."""
    import flowsim.models as pkg

    return tuple(sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")))


@functools.lru_cache(maxsize=32)
def _regime_from_file(path: str, mtime_ns: int) -> sym.Regime:
    # Keyed by the modification time too: an edited file is read again, an unchanged one keeps its Regime
    # (and so the derivations and compiled programs cached for it).
    name = "_flowsim_regime_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as importlib does: dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001  (any error of the user's file)
        sys.modules.pop(name, None)
        raise fail("name", path, f"a regime file that runs ({type(err).__name__}: {err})") from err
    regime = getattr(module, "REGIME", None)
    if not isinstance(regime, sym.Regime):
        raise fail("name", path, "a regime file that defines REGIME = flowsim.Regime(...)")
    return regime


def _find_regime(name) -> sym.Regime:
    if isinstance(name, sym.Regime):
        return name
    if isinstance(name, os.PathLike) or (isinstance(name, str) and name.endswith(".py")):
        path = os.path.abspath(os.fspath(name))
        if not os.path.isfile(path):
            raise fail("name", os.fspath(name), "the path of an existing regime file (.py)")
        return _regime_from_file(path, os.stat(path).st_mtime_ns)
    names = available_models()
    if not isinstance(name, str) or name not in names:
        raise fail("name", name, f"one of {names}, a flowsim.Regime, or the path of a regime file (.py)")
    return importlib.import_module(f"flowsim.models.{name}").REGIME


def load_model(
    name: Checked[str | os.PathLike | sym.Regime], *, lam: Checked[float] = 0.0, loss: Checked[str] = "square"
) -> Model:
    """Load a regime and derive its flow for `loss`.

    **Arguments:**

    - `name`: one of [`flowsim.available_models`][flowsim.available_models] (``"normalized"``, ``"unnormalized"``,
      ``"weightnorm"``), a [`flowsim.Regime`][flowsim.Regime], or the path of a regime file (a ``.py`` file defining
      ``REGIME = flowsim.Regime(...)``, as the files in ``models/`` do), so that a new regime needs no change to the
      installed package.
    - `lam`: weight decay λ ≥ 0.
    - `loss`: ``"square"`` (the default, ``(y − u)²``), ``"exponential"`` or ``"logistic"``.

    **Returns:** a [`flowsim.Model`][flowsim.Model].
    """
    regime = _find_regime(name)
    if not isinstance(loss, str) or loss not in LOSS_NAMES:
        raise fail("loss", loss, f"one of {LOSS_NAMES}")
    lam = check_lam(lam)
    return Model(regime, lam, loss)
