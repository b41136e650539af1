"""Every directory llamalab reads or writes, in one place.

- ``home()``: the cache (``LLAMALAB_HOME``, default ``~/.cache/llamalab``): converted models, built
  fixture databases.
- ``runs_dir()``: outputs (``LLAMALAB_RUNS``; default ``<repo>/runs`` in a source checkout,
  ``<home>/runs`` otherwise). A stage writes ``runs/<profile>/<stage>/``.
- ``configs_dir()``, ``data_dir()``, ``notebooks_dir()``: the repository's inputs, found from the
  package's own location (never from the current directory), or from the copies installed inside
  the package when it is installed without the repository (Colab).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

_PKG_DIR = Path(__file__).resolve().parent


def repo_root() -> Path | None:
    """The source checkout this package lives in, or None for an installed wheel."""
    root = _PKG_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "configs").is_dir():
        return root
    return None


def home() -> Path:
    return Path(os.environ.get("LLAMALAB_HOME") or Path.home() / ".cache" / "llamalab").expanduser()


def models_cache() -> Path:
    return home() / "models"


def runs_dir() -> Path:
    env = os.environ.get("LLAMALAB_RUNS")
    if env:
        return Path(env).expanduser()
    root = repo_root()
    return (root / "runs") if root else home() / "runs"


def stage_dir(profile: str, stage: str) -> Path:
    """``runs/<profile>/<stage>/`` (not created)."""
    return runs_dir() / profile / stage


def _resource_dir(name: str, installed_pkg: str) -> Path:
    root = repo_root()
    if root and (root / name).is_dir():
        return root / name
    try:
        return Path(str(resources.files(installed_pkg)))
    except ModuleNotFoundError as exc:  # pragma: no cover - broken install
        raise FileNotFoundError(
            f"llamalab cannot find its '{name}/' directory: not in a source checkout and not installed "
            f"as {installed_pkg}. Reinstall with `pip install .` from the repository."
        ) from exc


def configs_dir() -> Path:
    return _resource_dir("configs", "llamalab._configs")


def data_dir() -> Path:
    return _resource_dir("data", "llamalab._data")


def notebooks_dir() -> Path:
    root = repo_root()
    if root is None:
        raise FileNotFoundError("notebooks/ exists only in a source checkout of llamalab")
    return root / "notebooks"
