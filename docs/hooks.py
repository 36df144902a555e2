"""MkDocs hooks for diffjax's site (named in mkdocs.yml; not a page).

* The notebooks of ``examples/`` become the tutorials (``examples/NAME.ipynb`` in the nav), rendered
  by mkdocs-jupyter without being executed (tests/test_notebooks.py executes them).
* Every public module of the package gets a reference page rendered by mkdocstrings from its
  docstrings, and a "Reference" section is appended to the nav, so a new module is documented
  without editing mkdocs.yml.
* The docstrings' reStructuredText roles (``:func:`x` ``, ``:mod:``, ...) and ``::`` literal
  markers, which Markdown leaves as text, are dropped from the rendered reference pages.
* Nav entries for the pages in ``PENDING_PAGES`` are dropped while the page does not exist,
  so the site builds before those pages land; any other missing page fails the strict build.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "diffjax"
PENDING_PAGES: frozenset[str] = frozenset()
# The run API is imported lazily by diffjax/__init__.py, which static analysis cannot follow:
# the package's page links these names to where they are documented (once, so anchors stay unique).
TOP_LEVEL_EXTRAS = ("train", "load_run", "Run")
RUN_MODULE = "diffjax.runs"


def public_modules(root: Path = ROOT, package: str = PACKAGE) -> list[str]:
    """Dotted names of the package and its public submodules, found on disk without importing.

    Args:
      root: the repository root holding the package folder.
      package: the top-level package name.

    Returns:
      Sorted module names with no ``_``-prefixed part.
    """
    names = []
    base = root / package
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts) or "__pycache__" in path.parts:
            continue
        names.append(".".join(parts))
    return sorted(names)


def reference_uri(module: str) -> str:
    """The site path of ``module``'s reference page, e.g. ``reference/diffjax.sde.md``."""
    return f"reference/{module}.md"


def _reference_page(module: str) -> str:
    lines = [f"# `{module}`", "", f"::: {module}", ""]
    if module == PACKAGE:
        lines += ["## Runs (imported on first use)", ""]
        for name in TOP_LEVEL_EXTRAS:
            lines.append(f"* [`diffjax.{name}`]({RUN_MODULE}.md#{RUN_MODULE}.{name}): defined in `{RUN_MODULE}`")
        lines.append("")
    return "\n".join(lines)


def _reference_nav(modules: list[str]) -> list:
    """Modules grouped by their first subpackage: ``diffjax``, ``diffjax.data``, ``diffjax.nn``, ..."""
    groups: dict[str, list] = {}
    packages = {m for m in modules if (ROOT / Path(*m.split(".")) / "__init__.py").is_file()}
    for module in modules:
        parts = module.split(".")
        key = ".".join(parts[:2]) if len(parts) > 1 and ".".join(parts[:2]) in packages else PACKAGE
        groups.setdefault(key, []).append({module: reference_uri(module)})
    nav = list(groups.pop(PACKAGE, []))
    nav += [{group: entries} for group, entries in groups.items()]
    return nav


def _drop_pending(nav):
    kept = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            kept.append({next(iter(entry)): _drop_pending(value)})
        elif isinstance(value, str) and value in PENDING_PAGES and not (ROOT / "docs" / value).is_file():
            continue
        else:
            kept.append(entry)
    return kept


def on_config(config):
    """Drop the pending pages that are not there yet; append the reference section to the nav."""
    nav = _drop_pending(list(config["nav"] or []))
    nav.append({"Reference": _reference_nav(public_modules())})
    config["nav"] = nav
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files, config):
    """Add the notebooks of examples/ as tutorials and one generated page per public module."""
    for path in sorted((ROOT / "examples").glob("*.ipynb")):
        # A plain File rooted at the repository (not File.generated): mkdocs-jupyter's wrapper
        # finds the notebook through src_dir, and the page keeps the repository's path.
        files.append(File(f"examples/{path.name}", src_dir=os.fspath(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    for module in public_modules():
        files.append(File.generated(config, reference_uri(module), content=_reference_page(module)))
    return files


_RST_ROLE = re.compile(r":(?:py:)?(?:func|meth|mod|class|data|attr|obj|exc|const):(?=<code)")
_RST_LITERAL = re.compile(r"\s*::(?=</p>)")


def on_page_content(html, page, config, files):
    """Drop reStructuredText roles and ``::`` markers that docstrings carry into the reference pages."""
    if not page.file.src_uri.startswith("reference/"):
        return html
    return _RST_LITERAL.sub(":", _RST_ROLE.sub("", html))

