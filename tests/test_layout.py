"""The package's layering, read from its source with ``ast`` (nothing is imported).

The rules (``DESIGN.md``, "Layout"): the method (shared core, ``cutswap/``, ``semirest/``)
imports nothing from the command layer ``runs/`` or the figures ``viz/``; only ``viz/``
imports matplotlib, ipywidgets or ipyevents; no circle of imports anywhere, lazy imports
inside functions included. Each checker is first shown to fail on a small made-up package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cutswap_lib"
UPPER_LAYERS = ("runs", "viz")  # the command layer and the figures
PLOTTING = ("matplotlib", "ipywidgets", "ipyevents")


def module_name(root: Path, path: Path) -> str:
    """``cutswap_lib/semirest/model.py`` -> ``cutswap_lib.semirest.model`` (``__init__`` -> the package)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Edges inside the package ``{module: {imported module}}`` and outside ``{module: {top-level name}}``."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    inside: dict[str, set[str]] = {m: set() for m in files}
    outside: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]  # the package a relative import starts at
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
                subs = [f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in files]
                targets = subs or [stem]
                if subs and stem in files and len(subs) < len(node.names):
                    targets.append(stem)
            else:
                continue
            for target in targets:
                if target in files:
                    if target != mod:
                        inside[mod].add(target)
                elif target.split(".")[0] == root.name:
                    raise AssertionError(f"{path}: import of {target}, which is not in the package")
                else:
                    outside[mod].add(target.split(".")[0])
    return inside, outside


def layer_violations(root: Path) -> list[str]:
    """Method modules that import ``runs``/``viz``, and plotting imports outside ``viz``."""
    inside, outside = import_graph(root)
    upper = tuple(f"{root.name}.{layer}" for layer in UPPER_LAYERS)
    problems = []
    for mod in sorted(inside):
        in_upper = mod.startswith(upper) or mod == f"{root.name}.__main__"
        for target in sorted(inside[mod]):
            if not in_upper and target.startswith(upper):
                problems.append(f"{mod} (method) imports {target}")
        in_viz = mod.startswith(f"{root.name}.viz")
        for name in sorted(outside[mod] & set(PLOTTING)):
            if not in_viz:
                problems.append(f"{mod} imports {name} outside viz")
    return problems


def import_circles(root: Path) -> list[list[str]]:
    """Every circle of the import graph, one per strongly connected group (Tarjan's algorithm)."""
    inside, _ = import_graph(root)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(inside[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(inside):
        if v not in index:
            visit(v)
    return groups


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def bad_package(tmp_path) -> Path:
    return _write(tmp_path / "pkg", {
        "__init__.py": "",
        "core.py": "from .runs import report\n",  # method -> command layer
        "plots.py": "import matplotlib.pyplot as plt\n",  # plotting outside viz
        "runs/__init__.py": "from . import report\n",
        "runs/report.py": "def f():\n    from ..core import g  # lazy, still a circle\n",
        "viz/__init__.py": "",
        "viz/figs.py": "from matplotlib.figure import Figure\nfrom ..core import g\n",
        "a.py": "from . import b\n",
        "b.py": "from .a import x\n",
    })


def test_checkers_find_what_they_look_for(bad_package):
    assert layer_violations(bad_package) == ["pkg.core (method) imports pkg.runs.report",
                                             "pkg.plots imports matplotlib outside viz"]
    assert sorted(import_circles(bad_package)) == [["pkg.a", "pkg.b"], ["pkg.core", "pkg.runs.report"]]


def test_relative_imports_resolve_to_modules(tmp_path):
    root = _write(tmp_path / "pkg", {
        "__init__.py": "", "x/__init__.py": "from .m import f\n", "x/m.py": "from .. import y\n",
        "y.py": "from .x import m\nfrom .x import f\n",
    })
    inside, _ = import_graph(root)
    assert inside == {"pkg": set(), "pkg.x": {"pkg.x.m"}, "pkg.x.m": {"pkg.y"}, "pkg.y": {"pkg.x", "pkg.x.m"}}


def test_method_imports_no_command_layer_and_only_viz_plots():
    assert layer_violations(PACKAGE) == []


def test_no_import_circle():
    assert import_circles(PACKAGE) == []


def test_the_layers_are_where_the_design_puts_them():
    inside, _ = import_graph(PACKAGE)
    packages = {m.split(".")[1] for m in inside if m.count(".") >= 2}
    assert packages == {"cutswap", "data", "runs", "semirest", "viz"}
    flat = sorted(m.split(".")[1] for m in inside if m.count(".") == 1)
    assert flat == ["__main__", "backbones", "config", "coreset", "cutswap", "data", "files", "images", "jitter",
                    "metrics", "patchcore", "runs", "semirest", "viz", "weights"]
