"""The package version, in one place: setup.cfg reads it (``attr:``) and ``flowsim.__version__`` re-exports it."""

__version__ = "0.1.0"
