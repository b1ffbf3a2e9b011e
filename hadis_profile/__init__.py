"""hadis-profile: the offline phase of query-aware diffusion serving.

Importing the package is cheap on purpose: serving stacks import
``hadis_profile.resolve`` on their hot path, so nothing here pulls in torch,
diffusers, transformers, pandas, Rich or matplotlib. :func:`load_run` is
imported on first use (module ``__getattr__``), and pandas only when a run's
``frames()`` are asked for.

``__version__`` is the one place the version is written: ``pyproject.toml``
reads it (setuptools' dynamic version), and tables and runs record it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]

if TYPE_CHECKING:
    from hadis_profile.store.frames import load_run


def __getattr__(name: str) -> Any:
    if name == "load_run":
        from hadis_profile.store.frames import load_run

        return load_run
    raise AttributeError(f"module 'hadis_profile' has no attribute {name!r}")
