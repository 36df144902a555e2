"""The import structure of ``diffjax/``: no cycle, and no import from a lower layer to a higher one.

The layers are the ``layers`` block of docs/ARCHITECTURE.md. Static: the
modules' source is parsed (``ast``), nothing is imported, and imports inside
functions count as much as those at the top of a file (a lazy import is still
a dependency, and a loop of them is what makes a layer impossible to read alone).
"""

from __future__ import annotations

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "diffjax")


def modules() -> dict[str, str]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _owner(name: str, known) -> str | None:
    """The module of ``known`` that ``name`` (a module or a name inside one) lives in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(known: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file)."""
    graph = {}
    for module, path in known.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package upwards
                    parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(parts + ([base] if base else []))
                # ``from pkg import sub``: the submodule if it is one, else the module holding the name.
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "diffjax":
                    target = _owner(name, known)
                    if target is not None and target != module:
                        targets.add(target)
        graph[module] = targets
    return graph


def declared_layers() -> list[tuple[float, str, list[str]]]:
    """The ``layers`` block of docs/ARCHITECTURE.md: (rank, name, module patterns)."""
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")) as f:
        text = f.read()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/ARCHITECTURE.md has no ```layers block"
    layers = []
    for line in block.group(1).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            rank, name, *patterns = re.split(r"\s{2,}", line.strip(), maxsplit=2)
            layers.append((float(rank), name, patterns[0].split() if patterns else []))
    return layers


def layer_of(module: str, layers) -> tuple[float, str] | None:
    for rank, name, patterns in layers:
        for pattern in patterns:
            if module == pattern.removesuffix(".*") or (pattern.endswith(".*") and module.startswith(pattern[:-1])):
                return rank, name
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_inside_the_package():
    graph = import_graph(modules())
    loops = cycles(graph)
    detail = [" -> ".join(c) + ": " + "; ".join(f"{a} imports {sorted(graph[a] & set(c))}" for a in c) for c in loops]
    assert not loops, "modules that import each other in a loop:\n" + "\n".join(detail)


def test_every_module_has_a_layer_and_imports_only_downwards():
    known = modules()
    layers = declared_layers()
    missing = sorted(m for m in known if layer_of(m, layers) is None)
    assert not missing, f"give these modules a layer in the ```layers block of docs/ARCHITECTURE.md: {missing}"
    upward = []
    for module, targets in sorted(import_graph(known).items()):
        rank, name = layer_of(module, layers)
        for target in sorted(targets):
            target_rank, target_name = layer_of(target, layers)
            if target_rank > rank:
                upward.append(f"{module} ({name}) imports {target} ({target_name})")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    # The checks themselves: a loop and an upward edge are found.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    layers = declared_layers()
    assert layer_of("diffjax.sde", layers)[0] < layer_of("diffjax.builders", layers)[0]
    assert layer_of("diffjax.samplers.dpm_solver", layers)[1] == "core"
