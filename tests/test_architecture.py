"""The package's layout is its architecture (ARCHITECTURE.md): these tests keep it so.

Imports point down only, inside functions too:
    kernels <- scan, ssm_init <- mamba, lpr, dms <- layers <- model, mamim <- engine
    <- wsi, course <- cli
A module may import modules of a lower layer, and modules of its own room (its sub-package);
never upwards, never sideways into another room of the same layer, never in a cycle. No
private name crosses a module boundary, no public name is defined twice, and data_scripts
stays free of the library and of torch.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "ssmamba_lite"
ROOT = "ssmamba_lite"

# (layer, room) of every part of the package; a bigger layer may import a smaller one.
LAYERS = {
    "kernels": 0, "scan": 1, "ssm_init": 1, "mamba": 2, "lpr": 2, "dms": 2, "layers": 3,
    "model": 4, "mamim": 4, "engine": 6, "wsi": 7, "course": 7, "cli": 8,
}
API_LAYER = 5                       # ssmamba_lite/__init__.py: the public API, above the paper
PROTOCOLS = {"add_parser"}          # one function per CLI module, by design


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def place(name: str) -> tuple[float, str]:
    """(layer, room) of a module of the package."""
    parts = name.split(".")
    if len(parts) == 1:
        return API_LAYER, ROOT
    if parts[1] not in LAYERS:
        raise AssertionError(f"{name}: no layer for {parts[1]!r}; add it to LAYERS and to "
                             f"ARCHITECTURE.md")
    return LAYERS[parts[1]], parts[1]


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import in the file, functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                               # relative: resolve against the package
                name = module_name(path)
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [a.name for a in node.names], node.lineno))
    return found


def internal_targets(module: str, names: list[str]) -> list[str]:
    """The package modules an import statement loads (`from pkg import submodule` included)."""
    if module != ROOT and not module.startswith(ROOT + "."):
        return []
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return subs or [module]


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for module, names, _ in imports_of(path):
            graph[name].update(t for t in internal_targets(module, names) if t != name)
    return graph


def test_imports_point_down_only():
    wrong = []
    for name, path in MODULES.items():
        (layer, room) = place(name)
        for module, names, line in imports_of(path):
            for target in internal_targets(module, names):
                if target == name or target not in MODULES:
                    continue
                (t_layer, t_room) = place(target)
                if t_room != room and t_layer >= layer:
                    wrong.append(f"{path.relative_to(REPO)}:{line} imports {target} "
                                 f"(layer {t_layer:g} {t_room}) from layer {layer:g} {room}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph, state, cycles = edges(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def python_files():
    for folder in ("ssmamba_lite", "tests", "benchmarks", "notebooks", "data_scripts"):
        yield from sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", list(python_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_no_private_name_crosses_a_module(path):
    """`from ssmamba_lite.x import _y` and `x._y` on an imported module of the package."""
    tree = ast.parse(path.read_text())
    aliases, wrong = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(ROOT):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    wrong.append(f"line {node.lineno}: from {node.module} import {a.name}")
                elif f"{node.module}.{a.name}" in MODULES:
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(ROOT) and a.asname:
                    aliases.add(a.asname)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id in aliases and node.attr.startswith("_") and \
                not node.attr.startswith("__"):
            wrong.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not wrong, f"{path.relative_to(REPO)} uses private names of other modules: {wrong}"


def test_one_name_one_meaning():
    """A public function or class is defined in one module of the package only."""
    where: dict[str, list[str]] = {}
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and \
                    not node.name.startswith("_") and node.name not in PROTOCOLS:
                where.setdefault(node.name, []).append(name)
    twice = {n: ms for n, ms in where.items() if len(ms) > 1}
    assert not twice, f"names defined in several modules: {twice}"


def test_data_scripts_stay_free_of_the_library_and_torch():
    for path in sorted((REPO / "data_scripts").rglob("*.py")):
        for module, _, line in imports_of(path):
            top = module.split(".")[0]
            assert top not in (ROOT, "torch", "torchvision", "timm"), \
                f"{path.relative_to(REPO)}:{line} imports {module}"


def test_the_shape_of_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    rooms = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert len(top) <= 10, f"too many modules directly in ssmamba_lite/: {top}"
    assert len(rooms) >= 3 and set(rooms) <= set(LAYERS), rooms
    assert {"lpr.py", "dms.py", "mamim.py", "scan.py", "mamba.py", "model.py"} <= set(top)
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines (split them): {long}"
    for room in rooms:
        assert (PACKAGE / room / "__init__.py").read_text().strip().startswith('"""'), \
            f"{room}/__init__.py: say what the room holds in a docstring"


def test_the_repository_names_no_file_outside_it():
    """The architecture is written down here, and nothing points at a design file elsewhere."""
    doc = (REPO / "ARCHITECTURE.md").read_text()
    for room in LAYERS:
        assert re.search(rf"\b{room}(\.py|/)", doc), f"ARCHITECTURE.md does not show {room}"
    for path in python_files():
        if path.resolve() != Path(__file__).resolve():
            assert "shared/DESIGN" not in path.read_text(), path
    for path in (REPO / "README.md", REPO / "ARCHITECTURE.md", REPO / "Makefile"):
        assert "DESIGN.md" not in path.read_text(), path


def test_the_checks_catch_what_they_should(tmp_path):
    """The rules above fail on a module that breaks them (no test that cannot fail)."""
    assert place("ssmamba_lite.engine.train") == (6, "engine")
    assert place("ssmamba_lite.dms") == (2, "dms")
    with pytest.raises(AssertionError, match="no layer"):
        place("ssmamba_lite.attic.old")
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ssmamba_lite.engine.train import fit\n"
                   "from ssmamba_lite.engine.checkpoint import _secret\n")
    found = imports_of(bad)
    assert ("ssmamba_lite.engine.train", ["fit"], 2) in found
    assert internal_targets("ssmamba_lite.wsi", ["train"]) == ["ssmamba_lite.wsi.train"]
    assert internal_targets("numpy", ["array"]) == []
