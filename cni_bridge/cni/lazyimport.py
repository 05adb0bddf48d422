"""Import a submodule of a third-party package without running the package's __init__.

pyroute2's top-level __init__ imports far more than a plugin uses (every public class).
Its lower layers import cleanly on their own, so we put a bare stand-in for the parent
package in sys.modules while the submodule loads, and take it away afterwards so that a
later ordinary `import pyroute2` (tests, build time) still runs the real __init__.
"""

import sys
import types
from importlib.machinery import PathFinder


def import_submodule(package: str, submodule: str) -> types.ModuleType:
    """Return `package.submodule`, loading it without executing `package/__init__.py`."""
    full_name = f"{package}.{submodule}"
    if full_name in sys.modules:
        return sys.modules[full_name]
    if package in sys.modules:  # the real package is already loaded: use it
        return _import(full_name)
    spec = _find_package_spec(package)
    stand_in = types.ModuleType(package)
    stand_in.__path__ = list(spec.submodule_search_locations)
    stand_in.__spec__ = spec
    sys.modules[package] = stand_in
    try:
        return _import(full_name)
    finally:
        if sys.modules.get(package) is stand_in:
            del sys.modules[package]


def _find_package_spec(package: str):
    # sys.meta_path holds PyInstaller's importer in a frozen build and PathFinder otherwise.
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        spec = find_spec(package, None) if find_spec else None
        if spec is not None and spec.submodule_search_locations is not None:
            return spec
    spec = PathFinder.find_spec(package)
    if spec is None:
        raise ImportError(f"package {package!r} not found")
    return spec


def _import(name: str) -> types.ModuleType:
    __import__(name)
    return sys.modules[name]
