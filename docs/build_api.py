"""Build diffjax's API reference (HTML, pdoc) and list public objects without a docstring.

    python docs/build_api.py                 # writes docs/api/index.html (not committed)
    python docs/build_api.py -o OUT --check  # also fail when a public object lacks a docstring

Which modules: every module of the package whose dotted name has no part starting with
``_`` (pdoc alone would follow ``diffjax.__all__`` and skip most subpackages).
What is public in a module: the names in its ``__all__`` if it defines one, else every
function and class defined in it whose name does not start with ``_``; in a public class,
its own methods and properties not starting with ``_``. Each of those, and every module,
needs a docstring (an inherited method docstring counts).
"""

from __future__ import annotations

import argparse
import os
import pkgutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # document this checkout's package, installed or not


def public_modules(package: str = "diffjax") -> list[str]:
    """Dotted names of the package and its public submodules, sorted.

    Args:
      package: the top-level package name.

    Returns:
      Module names with no ``_``-prefixed part (``diffjax.samplers._stepping`` is left out).
    """
    import importlib

    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _resolve_lazy_names(modules: list[str]) -> None:
    """Import what each module's ``__all__`` names, so lazily loaded ones (``diffjax.train``) are documented.

    pdoc reads ``module.__dict__``; a module ``__getattr__`` (diffjax's lazy run API)
    only fills it on first access.
    """
    import importlib

    for name in modules:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            getattr(module, attr)


def _public_members(module_doc):
    import pdoc.doc

    explicit = getattr(module_doc.obj, "__all__", None)
    for name, member in module_doc.members.items():
        if explicit is not None:
            if name not in explicit:
                continue
        elif name.startswith("_") or member.taken_from[0] != module_doc.modulename:
            continue  # private, or imported from elsewhere (documented where it is defined)
        if isinstance(member, (pdoc.doc.Function, pdoc.doc.Class)):
            yield member


def missing_docstrings(modules: list[str]) -> list[str]:
    """Public modules, functions, classes and methods that have no docstring.

    Args:
      modules: dotted module names (see :func:`public_modules`).

    Returns:
      Fully qualified names of the undocumented objects (empty when all are documented).
    """
    import pdoc.doc

    _resolve_lazy_names(modules)
    missing, seen = [], set()
    for name in modules:
        module_doc = pdoc.doc.Module.from_name(name)
        if not module_doc.docstring.strip():
            missing.append(f"module {name}")
        for member in _public_members(module_doc):
            origin = ".".join(member.taken_from)
            if origin in seen:
                continue  # a re-export (e.g. diffjax.VPSDE) is checked once, where it is defined
            seen.add(origin)
            if not member.docstring.strip():
                missing.append(f"{member.kind} {origin}")
            if isinstance(member, pdoc.doc.Class):
                for attr in member.own_members:
                    if attr.name.startswith("_"):
                        continue
                    is_property = isinstance(getattr(member.obj, attr.name, None), property)
                    if (isinstance(attr, pdoc.doc.Function) or is_property) and not attr.docstring.strip():
                        missing.append(f"{'property' if is_property else attr.kind} {origin}.{attr.name}")
    return missing


def build(output_dir: str | os.PathLike, modules: list[str] | None = None) -> Path:
    """Render the HTML reference of ``modules`` (default: all public ones) into ``output_dir``.

    Args:
      output_dir: folder to write (created if needed).
      modules: dotted module names; default :func:`public_modules`.

    Returns:
      The path of the written ``index.html``.
    """
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="google", show_source=False)
    out = Path(output_dir)
    modules = modules or public_modules()
    _resolve_lazy_names(modules)
    with warnings.catch_warnings():
        # Naming a package and its submodules both is intended: pdoc would otherwise follow
        # diffjax.__all__ only; it warns that it adds each such module once.
        warnings.filterwarnings("ignore", message="The module specification", category=UserWarning)
        pdoc.pdoc(*modules, output_directory=out)
    return out / "index.html"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "api"), help="output folder")
    parser.add_argument("--check", action="store_true", help="exit 1 if a public object lacks a docstring")
    args = parser.parse_args()
    modules = public_modules()
    index = build(args.output, modules)
    print(f"API reference of {len(modules)} modules: {index}")
    if args.check:
        missing = missing_docstrings(modules)
        for name in missing:
            print(f"missing docstring: {name}")
        return 1 if missing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
