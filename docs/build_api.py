"""Build diffjax's documentation site and list public objects without a docstring.

    python docs/build_api.py                 # the site (MkDocs, warnings as errors) into site/
    python docs/build_api.py -o OUT --check  # also fail when a public object lacks a docstring

The site is ``mkdocs build --strict`` over mkdocs.yml: the guides in docs/, the notebooks of
examples/ and one API reference page per public module rendered from the docstrings
(docs/hooks.py). Which modules are public: every module of the package whose dotted name has
no part starting with ``_``. What is public in a module: the names in its ``__all__`` if it
defines one, else every function and class defined in it whose name does not start with ``_``;
in a public class, its own methods and properties not starting with ``_``. Each of those, and
every module, needs a docstring (an inherited method docstring counts).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
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
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _public_members(module):
    """(name, object) of what ``module`` makes public: its ``__all__``, else what it defines."""
    explicit = getattr(module, "__all__", None)
    if explicit is not None:
        for name in explicit:
            yield name, getattr(module, name)  # resolves lazily imported names (diffjax.train)
        return
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) == module.__name__:  # imported names are checked at home
            yield name, obj


def _own_methods(cls):
    """(name, is_property, docstring) of the public methods and properties ``cls`` defines itself."""
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, property):
            yield name, True, inspect.getdoc(attr) or _inherited_doc(cls, name)
        elif isinstance(attr, (staticmethod, classmethod)) or inspect.isfunction(attr):
            yield name, False, inspect.getdoc(getattr(cls, name))


def _inherited_doc(cls, name: str) -> str | None:
    for base in cls.__mro__[1:]:
        attr = vars(base).get(name)
        if attr is not None and attr.__doc__:
            return attr.__doc__
    return None


def missing_docstrings(modules: list[str]) -> list[str]:
    """Public modules, functions, classes and methods that have no docstring.

    Args:
      modules: dotted module names (see :func:`public_modules`).

    Returns:
      Fully qualified names of the undocumented objects (empty when all are documented).
    """
    missing, seen = [], set()
    for name in modules:
        module = importlib.import_module(name)
        if not (module.__doc__ or "").strip():
            missing.append(f"module {name}")
        for member_name, obj in _public_members(module):
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue  # constants, submodules and type aliases are documented in prose
            origin = f"{obj.__module__}.{obj.__qualname__}"
            if origin in seen:
                continue  # a re-export (e.g. diffjax.VPSDE) is checked once, where it is defined
            seen.add(origin)
            kind = "class" if inspect.isclass(obj) else "function"
            if not (inspect.getdoc(obj) or "").strip():
                missing.append(f"{kind} {origin}")
            if inspect.isclass(obj):
                for attr, is_property, doc in _own_methods(obj):
                    if not (doc or "").strip():
                        missing.append(f"{'property' if is_property else 'method'} {origin}.{attr}")
    return missing


def build(output_dir: str | os.PathLike, *, strict: bool = True) -> Path:
    """Build the site with MkDocs (``mkdocs build --strict``) into ``output_dir``.

    Args:
      output_dir: the folder to write (replaced).
      strict: treat every MkDocs warning as an error.

    Returns:
      The path of the written ``index.html``.

    Raises:
      RuntimeError: the build failed; the message holds MkDocs' output.
    """
    out = Path(output_dir).resolve()
    cmd = [sys.executable, "-m", "mkdocs", "build", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)]
    if strict:
        cmd.append("--strict")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mkdocs build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out / "index.html"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "site"), help="output folder")
    parser.add_argument("--check", action="store_true", help="exit 1 if a public object lacks a docstring")
    args = parser.parse_args()
    if args.check:
        missing = missing_docstrings(public_modules())
        for name in missing:
            print(f"missing docstring: {name}")
        if missing:
            return 1
    print(f"site: {build(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
