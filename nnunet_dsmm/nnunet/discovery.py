"""nnU-Net discovery glue: let the stock ``nnUNetv2_*`` commands find plugin classes by name.

nnU-Net (2.8.x) resolves trainers, planners, preprocessors and fingerprint extractors with
``nnunetv2.utilities.find_class_by_name.recursive_find_python_class``, which only searches its
own package folders. Every caller binds that function with ``from ... import`` at import time,
so the function has to be replaced *while its module is first imported*. ``install()`` (run
from a one-line ``.pth`` file at interpreter start) registers a meta-path finder that does
exactly that and nothing else: programs that never import nnU-Net pay for importing this
module only.

The replacement first looks the class name up among the entry points of group
``nnunet_dsmm.nnunetv2_classes`` (any installed distribution may register there), then falls
back to nnU-Net's own search.
"""

from __future__ import annotations

import sys

LOOKUP_MODULE = "nnunetv2.utilities.find_class_by_name"
LOOKUP_FUNCTION = "recursive_find_python_class"
ENTRY_POINT_GROUP = "nnunet_dsmm.nnunetv2_classes"

_registry: dict[str, object] | None = None


def registered_entry_points() -> dict[str, object]:
    """Entry points of ``ENTRY_POINT_GROUP`` by class name (read once per process)."""
    global _registry
    if _registry is None:
        from importlib.metadata import entry_points

        _registry = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _registry


def find_registered_class(class_name: str) -> type | None:
    """The class registered under ``class_name``, or None."""
    entry_point = registered_entry_points().get(class_name)
    return None if entry_point is None else entry_point.load()


def suggestion(name: str) -> str:
    """``; did you mean X?`` with the registered name closest to ``name`` (or a list of the registered
    trainers when none is close)."""
    from difflib import get_close_matches

    names = sorted(registered_entry_points())
    close = get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}?"
    return "; registered trainers: " + ", ".join(n for n in names if "Trainer" in n)


def _plugin_aware(original):
    def recursive_find_python_class(folder, class_name, current_module, *args, **kwargs):
        found = find_registered_class(class_name)
        if found is not None:
            return found
        return original(folder, class_name, current_module, *args, **kwargs)

    recursive_find_python_class.__wrapped__ = original
    recursive_find_python_class.__doc__ = original.__doc__
    return recursive_find_python_class


def patch_lookup_module(module) -> None:
    """Replace the lookup function of nnU-Net's (just executed) lookup module."""
    current = getattr(module, LOOKUP_FUNCTION)
    if not hasattr(current, "__wrapped__"):
        setattr(module, LOOKUP_FUNCTION, _plugin_aware(current))


class _PatchingLoader:
    """Delegates to the real loader, then patches the module it executed."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        patch_lookup_module(module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _LookupModuleFinder:
    """Meta-path finder that reacts to one module name only."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != LOOKUP_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def is_installed() -> bool:
    return any(isinstance(finder, _LookupModuleFinder) for finder in sys.meta_path)


def install() -> None:
    """Hook nnU-Net's class lookup (idempotent; patches at once if nnU-Net is already loaded)."""
    if LOOKUP_MODULE in sys.modules:
        patch_lookup_module(sys.modules[LOOKUP_MODULE])
    if not is_installed():
        sys.meta_path.insert(0, _LookupModuleFinder())
