"""The import graph stays layered (ast walk over the repository, nothing imported).

* search_spaces/, predictors/ and kernels/ never import nas_cli/ (the library stands without its CLI);
* no import cycle between modules (a lazy import inside a function counts as an edge);
* no ``from X import _name`` of a private name defined in another module, tests and bench included (a
  package's private submodule, like ``kernels/_common.py``, may be imported inside that package).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("search_spaces", "predictors", "kernels")
PACKAGES = LIBRARY + ("nas_cli",)
SKIP_PARTS = {".venv", "build", "dist", "__pycache__", ".git"}
#: top-level folders that hold run outputs, not code (nas_cli/runs/ is code)
SKIP_TOP = {"runs"}


def _files(folders) -> list[Path]:
    out = []
    for folder in folders:
        out += [p for p in sorted((ROOT / folder).rglob("*.py"))
                if not SKIP_PARTS & set(p.relative_to(ROOT).parts) and p.relative_to(ROOT).parts[0] not in SKIP_TOP]
    return out


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path):
    """(line, imported module, imported name or None) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            for alias in node.names:
                yield node.lineno, module, alias.name


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _files(PACKAGES):
        src = _module_name(path)
        targets = graph.setdefault(src, set())
        for _, module, name in _imports(path):
            if not _ours(module):
                continue
            target = f"{module}.{name}" if name and _is_module(f"{module}.{name}") else module
            if target != src:
                targets.add(target)
    return graph


def test_the_library_never_imports_the_cli():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}"
           for p in _files(LIBRARY) for line, module, _ in _imports(p) if module.split(".")[0] == "nas_cli"]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = _edges()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_private_names_across_modules():
    bad = []
    for path in _files(PACKAGES + ("tests", "bench")):
        importer = _module_name(path)
        for line, module, name in _imports(path):
            if not name or not name.startswith("_") or name.startswith("__") or not _ours(module):
                continue
            if _is_module(f"{module}.{name}") and importer.split(".")[0] == module.split(".")[0]:
                continue  # a package's own private submodule
            bad.append(f"{path.relative_to(ROOT)}:{line} from {module} import {name}")
    assert not bad, "\n".join(bad)


def test_four_space_indentation_is_checked_by_the_linter():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"E111"' in text and "ruff check" in (ROOT / "Makefile").read_text()


def test_searching_and_exporting_do_not_import_the_trainer():
    """`nas search` and `nas export` load the library they use, not the supernet trainer (its optax
    update, TensorBoard writer and input pipeline are for training only)."""
    code = ("import sys, nas_cli.search, nas_cli.evaluation.supernet, nas_cli.export; "
            "print(','.join(m for m in ('nas_cli.training.supernet', 'tensorboardX') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"searching/exporting imported {out.stdout.strip()}"


def test_the_search_reads_no_evaluator_capability_by_getattr():
    """Every capability is declared on nas_cli.evaluation.Evaluator with its default: a ``getattr``
    fallback would turn a misspelt one into a silently missing feature."""
    found = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "nas_cli").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if "getattr(" in line and "evaluator" in line.split("getattr(", 1)[1].split(",")[0]]
    assert not found, found
