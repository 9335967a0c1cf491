"""Versions of the software a run used, recorded in run folders (and reports) so results can be traced."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("efficientscn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_PACKAGES = ("tensorflow", "keras", "SimpleITK", "numpy")


def versions() -> dict[str, str]:
    """Python, efficientscn and the numeric packages' versions ("missing" for one not installed)."""
    found = {"python": platform.python_version(), "efficientscn": __version__}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "missing"
    return found
