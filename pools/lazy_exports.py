"""A package's public names, imported from their modules on first use (PEP 562).

``import pools.errors`` runs ``pools/__init__``; were that to import every
module of the store, a command that redeems one code would load them all.
The packages instead keep one table of where each name lives
(``EXPORTS``: module → names) and look a name up there the first time it
is asked for. ``__all__`` is made from the table, and so is the stub type
checkers read instead (``__init__.pyi``): :func:`write_stubs` writes them
again after a table changed (a test says when one is stale).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

#: The packages whose names load on first use.
PACKAGES = ("promomail.pools", "promomail.templating", "promomail.delivery")


def lazy_exports(
    package: str, exports: Mapping[str, tuple[str, ...]], namespace: MutableMapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, whose globals are
    ``namespace``."""
    homes = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *homes})

    return __getattr__, __dir__, sorted(homes)


def stub_text(package: str, exports: Mapping[str, tuple[str, ...]]) -> str:
    """The ``__init__.pyi`` of ``package``: its table as the imports a type checker reads."""
    lines = [
        f"# The public names of {package}, for type checkers: written from EXPORTS in",
        f"# the __init__.py of {package} by promomail.pools.lazy_exports.write_stubs(); do not edit.",
        "",
    ]
    for module in sorted(exports):
        names = sorted(exports[module])
        lines.append(f"from {module} import (")
        lines.extend(f"    {name} as {name}," for name in names)
        lines.append(")")
    everything = sorted(name for names in exports.values() for name in names)
    lines.append("")
    lines.append("EXPORTS: dict[str, tuple[str, ...]]")
    lines.append("")
    lines.append("__all__ = [")
    lines.extend(f'    "{name}",' for name in everything)
    lines.append("]")
    return "\n".join(lines) + "\n"


def stub_path(package: str) -> Path:
    return Path(importlib.import_module(package).__file__ or "").with_suffix(".pyi")


def write_stubs() -> None:
    """Write every package's stub from its table."""
    for package in PACKAGES:
        exports = importlib.import_module(package).EXPORTS
        stub_path(package).write_text(stub_text(package, exports), encoding="utf-8")
