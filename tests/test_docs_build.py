"""The documentation site builds with warnings as errors, every public object has a docstring,
and the pages are whole: every config and notebook is linked, no page talks about how the
project was made."""

import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROCESS_WORDS = re.compile(
    r"this session|last session|the issue('s)?\b|this stop|last stop|closing note|(was|were|not) lent|"
    r"targets? (met|missed)", re.IGNORECASE)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_api():
    return _load("build_api", ROOT / "docs" / "build_api.py")


def _doc_pages() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md"))


def test_every_public_object_has_a_docstring():
    build_api = _build_api()
    modules = build_api.public_modules()
    # The walk finds the subpackages diffjax.__all__ does not list and leaves private modules out.
    assert {"diffjax", "diffjax.sde", "diffjax.plots", "diffjax.nn.unet", "diffjax.data.builtin"} <= set(modules)
    assert not any(part.startswith("_") for m in modules for part in m.split("."))
    missing = build_api.missing_docstrings(modules)
    assert not missing, "public objects without a docstring:\n" + "\n".join(missing)


def test_the_docstring_check_finds_what_is_missing(monkeypatch):
    """A module, function, class, method and property without a docstring are each reported."""
    fake = types.ModuleType("fake_public")
    exec(
        "def documented():\n    'Yes.'\n"
        "def bare(): pass\n"
        "class Bare:\n    def method(self): pass\n    @property\n    def prop(self): return 1\n"
        "class Fine:\n    'Yes.'\n    def method(self):\n        'Yes.'\n",
        fake.__dict__)
    for obj in (fake.documented, fake.bare, fake.Bare, fake.Fine):
        obj.__module__ = "fake_public"
    monkeypatch.setitem(sys.modules, "fake_public", fake)
    missing = _build_api().missing_docstrings(["fake_public"])
    assert set(missing) == {"module fake_public", "function fake_public.bare", "class fake_public.Bare",
                            "method fake_public.Bare.method", "property fake_public.Bare.prop"}


def test_site_builds_strict_with_reference_and_tutorials(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs site needs the 'docs' extra (mkdocs)")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("mkdocs_jupyter")
    build_api = _build_api()
    hooks = _load("docs_hooks", ROOT / "docs" / "hooks.py")
    index = build_api.build(tmp_path / "site")  # raises with MkDocs' output on any warning
    assert index.is_file()
    site = tmp_path / "site"
    for module in hooks.public_modules():
        assert (site / "reference" / module / "index.html").is_file(), module
    plots = (site / "reference" / "diffjax.plots" / "index.html").read_text()
    assert "plot_training_curves" in plots and "Returns" in plots
    sde_page = (site / "reference" / "diffjax.sde" / "index.html").read_text()
    assert ":meth:" not in sde_page and "alpha_sigma" in sde_page  # docstrings' RST roles are dropped
    top = (site / "reference" / "diffjax" / "index.html").read_text()
    assert "diffjax.train" in top and "diffjax.load_run" in top  # the run API is on the package's page
    for notebook in sorted((ROOT / "examples").glob("*.ipynb")):
        page = site / "examples" / notebook.stem / "index.html"
        assert page.is_file() and "jupyter" in page.read_text().lower(), notebook.name


def test_nav_names_existing_pages_and_every_page_is_in_the_nav():
    hooks = _load("docs_hooks", ROOT / "docs" / "hooks.py")

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)

    def targets(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            if isinstance(value, list):
                yield from targets(value)
            else:
                yield value

    in_nav = set(targets(config["nav"]))
    for target in in_nav:
        if target.startswith("examples/"):
            assert (ROOT / target).is_file(), target
        elif target not in hooks.PENDING_PAGES:
            assert (ROOT / "docs" / target).is_file(), f"mkdocs.yml's nav names a missing page: {target}"
    pages = {str(p.relative_to(ROOT / "docs")) for p in _doc_pages()}
    orphans = sorted(pages - in_nav)
    assert not orphans, f"pages missing from mkdocs.yml's nav: {orphans}"


def test_every_config_and_notebook_is_documented():
    configs_page = (ROOT / "docs" / "configs.md").read_text()
    for path in sorted((ROOT / "configs").glob("*.py")):
        if path.stem != "__init__":
            listed = f"`{path.name}`" in configs_page or f"`configs/{path.name}`" in configs_page
            assert listed, f"docs/configs.md does not list {path.name}"
    readme = (ROOT / "README.md").read_text()
    tutorials = (ROOT / "docs" / "tutorials" / "index.md").read_text()
    for notebook in sorted((ROOT / "examples").glob("*.ipynb")):
        assert f"examples/{notebook.name}" in readme and notebook.name in tutorials, notebook.name


def test_docs_speak_of_the_project_only():
    files = [ROOT / "README.md", *_doc_pages(), *sorted((ROOT / "examples").glob("*"))]
    hits = []
    for path in files:
        if path.suffix not in (".md", ".py", ".ipynb"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PROCESS_WORDS.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, "words about how the project was made, not about the project:\n" + "\n".join(hits)


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
