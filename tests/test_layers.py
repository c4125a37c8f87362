"""The folder list is the architecture: hw2lib's subpackages are layers, every import points down
(or stays within its layer), and no module imports itself back through a cycle.

The imports are read from the source (`ast`), function-level ones included, so a lazy import that
reaches up is caught as well as one at the top of a file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hw2lib"
# Bottom to top. The package root (`hw2lib`: `__version__` only) may be imported by every layer;
# `cli` is the top.
LAYERS = ("core", "data", "nets", "train", "study", "report", "gpu", "cli")


def module_names() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        out[name] = p
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The hw2lib modules `name` imports (a package's submodule where one is named)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names} & known
            out |= subs or ({mod} & known)
    out.discard(name)
    return out


def layer_of(name: str) -> int | None:
    """The layer index of a module (None: the package root, allowed everywhere)."""
    parts = name.split(".")
    if len(parts) == 1:
        return None
    if parts[1] not in LAYERS:
        raise AssertionError(f"{name}: hw2lib/{parts[1]} is not one of the layers {LAYERS}; "
                             "add it to LAYERS in its place, or move the module into a layer")
    return LAYERS.index(parts[1])


def graph() -> dict[str, set[str]]:
    mods = module_names()
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def layer_violations(g: dict[str, set[str]]) -> list[str]:
    out = []
    for m, targets in g.items():
        mine = layer_of(m)
        for t in targets:
            theirs = layer_of(t)
            if theirs is not None and (mine is None or theirs > mine):
                out.append(f"{m} ({LAYERS[mine] if mine is not None else 'root'}) imports {t} "
                           f"({LAYERS[theirs]}), a layer above it")
    return sorted(out)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in sorted(g.get(u, ())):
            if v.startswith(u + "."):  # a package importing its own submodule (re-exports)
                continue
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if not state.get(v):
                found = visit(v)
                if found:
                    return found
        state[u] = 2
        path.pop()
        return None

    for u in sorted(g):
        if not state.get(u):
            found = visit(u)
            if found:
                return found
    return None


def test_no_module_imports_from_a_higher_layer():
    assert layer_violations(graph()) == []


def test_there_is_no_import_cycle():
    assert find_cycle(graph()) is None


def test_the_checks_catch_an_import_up_and_a_cycle():
    g = {"hw2lib.core.io": {"hw2lib.train.engine"}, "hw2lib.train.engine": {"hw2lib.core.io"}}
    assert layer_violations(g) == ["hw2lib.core.io (core) imports hw2lib.train.engine (train), "
                                   "a layer above it"]
    assert find_cycle(g) == ["hw2lib.core.io", "hw2lib.train.engine", "hw2lib.core.io"]


def test_a_lazy_import_inside_a_function_is_read_too(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from hw2lib.report.run import report\n    return report\n")
    assert imports_of("hw2lib.core.m", src, {"hw2lib.report.run"}) == {"hw2lib.report.run"}


def test_the_package_lists_its_layers_and_little_else():
    entries = sorted(p.name for p in PKG.iterdir() if not p.name.startswith((".", "__pycache__")))
    assert entries == sorted(["__init__.py", "cli.py", *[x for x in LAYERS if x != "cli"]])


@pytest.mark.parametrize("layer", [x for x in LAYERS if x != "cli"])
def test_each_layer_says_what_it_does_and_may_use(layer):
    doc = ast.get_docstring(ast.parse((PKG / layer / "__init__.py").read_text(encoding="utf-8")))
    assert doc and len(doc) > 120, f"hw2lib/{layer}/__init__.py needs its layer's docstring"
    assert "may use" in doc or "imports nothing else" in doc
