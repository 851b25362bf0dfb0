"""The project's phase-portrait figures (written by ``flowsim reproduce``)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from .._analysis import interpolable_data
from .._data import gaussian_clusters
from .._model import Network, load_model
from ._deep import deep_portrait
from ._phase import phase_portrait

# Weight decays of the λ > 0 panels of the project's figures, sized to the default data sets.
FIGURE_LAMBDAS = {"normalized": 5.0, "unnormalized": 8.0}
SUPTITLES = {
    "normalized": r"The normalized model's exact 2-D reduction, one linear layer: without and with weight decay, "
    r"and the singular case",
    "unnormalized": r"The unnormalized model's exact 2-D reduction, the scalar chain: balance hyperbolas "
    r"$\rho_1^2 - \rho_2^2$ without weight decay, two nodes with it",
}


def _deep_problem(quick: bool):
    data = gaussian_clusters(n=16 if quick else 32, dim=4, seed=1)
    net = Network((4, 8, 1) if quick else (4, 8, 8, 1), activation="relu")
    return net, data


def save_all(out_dir="figures", *, quick: bool = True, dpi: int = 150, deep: bool = True) -> list[Path]:
    """Write the phase-portrait figures as PNG files (used by ``flowsim reproduce``).

    Files: ``phase_normalized.png`` (one linear layer: λ = 0 and λ > 0 on the default data, and λ = 0 on
    [`flowsim.plot.interpolable_data`][flowsim.plot.interpolable_data], the singular continuum),
    ``phase_unnormalized.png`` (scalar chain, λ = 0 and λ > 0), ``phase_deep.png`` (deep ReLU networks projected onto
    (normalized margin, ρ); needs [`flowsim.simulate`][flowsim.simulate], skipped with a warning if it is missing).

    **Arguments:**

    - `out_dir`: the folder to write to (created if needed).
    - `quick`: fewer trajectories, runs and a smaller network (seconds instead of minutes).
    - `dpi`: resolution of the PNG files.
    - `deep`: also write the deep-network figure.

    **Returns:** the list of written paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 64 if quick else 256
    written = []
    for name in ("normalized", "unnormalized"):
        panels = [(0.0, None, None), (FIGURE_LAMBDAS[name], None, None)]
        if name == "normalized":  # the singular case needs data a linear layer can interpolate
            panels.append(
                (
                    0.0,
                    interpolable_data(),
                    r"Phase portrait in ($\theta, \rho$): normalized, $\lambda = 0$"
                    "\n"
                    r"interpolable data $x_n = y_n u$: a continuum of equilibria (singular)",
                )
            )
        fig = Figure(figsize=(5.4 * len(panels), 4.9), layout="constrained")
        axes = fig.subplots(1, len(panels))
        for ax, (lam, data, title) in zip(axes, panels):
            phase_portrait(load_model(name, lam=lam), data, n_trajectories=n, ax=ax, title=title)
        fig.suptitle(SUPTITLES[name], fontsize=11)
        path = out / f"phase_{name}.png"
        fig.savefig(path, dpi=dpi)
        written.append(path)
    if deep:
        net, data = _deep_problem(quick)
        fig = Figure(figsize=(11.0, 4.9), layout="constrained")
        axes = fig.subplots(1, 2)
        fig.suptitle(
            r"Deep ReLU networks: full runs of the flow projected onto (normalized margin, $\rho$), "
            r"with $\rho_{eq}(V(t))$ dashed",
            fontsize=11,
        )
        scales = (0.1, 1.0, 4.0) if quick else (0.03, 0.3, 3.0)
        seeds = (0,) if quick else (0, 1)
        deep_portrait(load_model("normalized", lam=1e-2), net, data, scales=scales, seeds=seeds, t1=20.0, ax=axes[0])
        deep_portrait(load_model("unnormalized", lam=0.0), net, data, scales=scales, seeds=seeds, t1=20.0, ax=axes[1])
        path = out / "phase_deep.png"
        fig.savefig(path, dpi=dpi)
        written.append(path)
    return written
