"""The repository's layout is its architecture (ARCHITECTURE.md): these tests keep it so.

Imports point down only, inside functions too:
    kernels <- scan, ssm_init, tracing <- mamba, lpr, dms <- layers <- model, mamim (presets
    above model) <- engine <- wsi, course <- cli
A module may import modules of a lower layer, and modules of its own room (its sub-package);
never upwards, never sideways into another room of the same layer, never in a cycle. No
private name crosses a module boundary, no public name is defined twice, every module reads
in one sitting, and ARCHITECTURE.md's Rooms listing names every module there is.

data_scripts/ follows the same rules of cycles, private names and one definition per name,
and stays free of the library and of torch.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "ssmamba_lite"
ROOT = "ssmamba_lite"
DATA = "data_scripts"
FORBIDDEN_IN_DATA = (ROOT, "torch", "torchvision", "timm")

# (layer, room) of every part of the package; a bigger layer may import a smaller one.
# presets sits in model's layer, above model itself: a preset is an SSMamba configuration.
LAYERS = {
    "kernels": 0, "scan": 1, "ssm_init": 1, "tracing": 1, "mamba": 2, "lpr": 2, "dms": 2,
    "layers": 3, "model": 4, "mamim": 4, "presets": 4.5, "engine": 6, "wsi": 7, "course": 7,
    "cli": 8,
}
API_LAYER = 5                       # ssmamba_lite/__init__.py: the public API, above the paper
PROTOCOLS = {"add_parser"}          # one function per CLI module, by design
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
DATA_MODULES = {module_name(p): p for p in sorted((REPO / DATA).rglob("*.py"))}
TREES = {ROOT: MODULES, DATA: DATA_MODULES}
ALL_MODULES = {**MODULES, **DATA_MODULES}


def place(name: str) -> tuple[float, str]:
    """(layer, room) of a module of the package."""
    parts = name.split(".")
    if len(parts) == 1:
        return API_LAYER, ROOT
    if parts[1] not in LAYERS:
        raise AssertionError(f"{name}: no layer for {parts[1]!r}; add it to LAYERS and to "
                             f"ARCHITECTURE.md")
    return LAYERS[parts[1]], parts[1]


def imported_module(node: ast.ImportFrom, path: Path) -> str:
    """The module a `from ... import` statement reads, relative imports resolved."""
    base = node.module or ""
    if not node.level:
        return base
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(anchor + ([base] if base else []))


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import in the file, functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((imported_module(node, path), [a.name for a in node.names], node.lineno))
    return found


def in_tree(module: str) -> str | None:
    """The tree (ssmamba_lite or data_scripts) a module name belongs to, or None."""
    return next((root for root in TREES if module == root or module.startswith(root + ".")),
                None)


def internal_targets(module: str, names: list[str]) -> list[str]:
    """The repository modules an import statement loads (`from pkg import submodule` included)."""
    if in_tree(module) is None:
        return []
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in ALL_MODULES]
    return subs or [module]


def edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for module, names, _ in imports_of(path):
            graph[name].update(t for t in internal_targets(module, names)
                               if t != name and t in modules)
    return graph


def cycles_in(graph: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first walk of `graph` meets, as 'a -> b -> a'."""
    state: dict[str, str] = {}
    cycles: list[str] = []

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
    return cycles


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def dotted(node: ast.expr) -> str | None:
    """'a.b.c' for the expression a.b.c made of names, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def private_uses(path: Path) -> list[str]:
    """`from <tree>.x import _y`, and `x._y` on a module of either tree bound to a name."""
    tree = ast.parse(path.read_text())
    modules, wrong = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = imported_module(node, path)
            if in_tree(source) is None:
                continue
            for a in node.names:
                if private(a.name):
                    wrong.append(f"line {node.lineno}: from {source} import {a.name}")
                elif f"{source}.{a.name}" in ALL_MODULES:
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if in_tree(a.name) is not None:
                    modules.add(a.asname or a.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and \
                dotted(node.value) in modules:
            wrong.append(f"line {node.lineno}: {dotted(node.value)}.{node.attr}")
    return wrong


def defined_twice(modules: dict[str, Path]) -> dict[str, list[str]]:
    """Public functions and classes defined at the top of more than one of `modules`."""
    where: dict[str, list[str]] = {}
    for name, path in modules.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and \
                    not private(node.name) and node.name not in PROTOCOLS:
                where.setdefault(node.name, []).append(name)
    return {n: ms for n, ms in where.items() if len(ms) > 1}


ENTRY = re.compile(r"[\w.-]+(/|\.\w+)")


def rooms_listing(text: str) -> set[str]:
    """The paths (folders end in '/') that ARCHITECTURE.md's Rooms listing names.

    The listing is a tree: an entry's name starts two spaces right of its folder's, its
    description (and that description's continuation lines) further right still.
    """
    section = text.split("\n## Rooms", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    named: set[str] = set()
    folders: list[tuple[int, str]] = []        # (indent, path) of the folders around a line
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        while folders and folders[-1][0] >= indent:
            folders.pop()
        if indent != (folders[-1][0] + 2 if folders else 0):
            continue                           # a description's continuation line
        token = line.split()[0]
        assert ENTRY.fullmatch(token), f"ARCHITECTURE.md, Rooms: {line.strip()!r} names no " \
                                       f"file or folder where one is due"
        path = (folders[-1][1] if folders else "") + token
        named.add(path)
        if token.endswith("/"):
            folders.append((indent, path))
    return named


def listed_modules(named: set[str]) -> set[str]:
    """The .py files the listing names: its files, and the __init__.py of its packages."""
    files = {p for p in named if p.endswith(".py")}
    return files | {p + "__init__.py" for p in named
                    if p.endswith("/") and (REPO / p / "__init__.py").is_file()}


# ----------------------------------------------------------------------------- the rules
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


@pytest.mark.parametrize("root", TREES)
def test_no_import_cycles(root):
    cycles = cycles_in(edges(TREES[root]))
    assert not cycles, f"import cycles in {root}:\n" + "\n".join(cycles)


def python_files():
    for folder in ("ssmamba_lite", "tests", "benchmarks", "notebooks", "data_scripts"):
        yield from sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", list(python_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_no_private_name_crosses_a_module(path):
    """No `_name` of a module of ssmamba_lite or data_scripts is used outside that module."""
    wrong = private_uses(path)
    assert not wrong, f"{path.relative_to(REPO)} uses private names of other modules: {wrong}"


@pytest.mark.parametrize("root", TREES)
def test_one_name_one_meaning(root):
    """A public function or class is defined in one module of its tree only."""
    twice = defined_twice(TREES[root])
    assert not twice, f"names defined in several modules of {root}: {twice}"


def test_data_scripts_stay_free_of_the_library_and_torch():
    for path in DATA_MODULES.values():
        for module, _, line in imports_of(path):
            assert module.split(".")[0] not in FORBIDDEN_IN_DATA, \
                f"{path.relative_to(REPO)}:{line} imports {module}"


def test_importing_data_scripts_loads_neither_torch_nor_the_library():
    """What the import statements above cannot see: a dependency that pulls torch in."""
    code = ("import importlib, sys\n"
            f"for name in {sorted(DATA_MODULES)!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_DATA!r}))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", f"importing data_scripts loads {r.stdout.strip()}"


@pytest.mark.parametrize("root", TREES)
def test_every_module_reads_in_one_sitting(root):
    long = {str(p.relative_to(REPO)): n for p in TREES[root].values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_the_shape_of_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    rooms = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert len(top) <= 10, f"too many modules directly in ssmamba_lite/: {top}"
    assert len(rooms) >= 3 and set(rooms) <= set(LAYERS), rooms
    assert {"lpr.py", "dms.py", "mamim.py", "scan.py", "mamba.py", "model.py"} <= set(top)
    for room in rooms:
        assert (PACKAGE / room / "__init__.py").read_text().strip().startswith('"""'), \
            f"{room}/__init__.py: say what the room holds in a docstring"


def test_architecture_md_lists_every_module_and_only_those():
    """The Rooms listing and the tree agree: every module of ssmamba_lite/ (sub-packages
    too) and of data_scripts/ is named there, and everything named there exists."""
    named = rooms_listing((REPO / "ARCHITECTURE.md").read_text())
    modules = {str(p.relative_to(REPO)) for p in ALL_MODULES.values()}
    unlisted = sorted(modules - listed_modules(named))
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not unlisted, f"modules that ARCHITECTURE.md's Rooms listing does not name: {unlisted}"
    assert not missing, f"ARCHITECTURE.md's Rooms listing names what is not there: {missing}"


def test_the_repository_names_no_file_outside_it():
    """The architecture is written down here, and nothing points at a design file elsewhere."""
    doc = (REPO / "ARCHITECTURE.md").read_text()
    for room in LAYERS:
        assert re.search(rf"\b{room}(\.py|/)", doc), f"ARCHITECTURE.md does not show {room}"
    for path in python_files():
        if path.resolve() != Path(__file__).resolve():
            assert "shared/DESIGN" not in path.read_text(), path
    for path in (REPO / "README.md", REPO / "ARCHITECTURE.md", REPO / "Makefile",
                 *sorted((REPO / "docs").glob("*.md"))):
        assert "DESIGN.md" not in path.read_text(), path


# ----------------------------------------------------------------------------- the checks
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
    assert internal_targets("data_scripts", ["fetch"]) == ["data_scripts.fetch"]
    assert internal_targets("numpy", ["array"]) == []
    assert private_uses(bad) == ["line 3: from ssmamba_lite.engine.checkpoint import _secret"]


def test_the_cycle_and_private_name_checks_see_data_scripts(tmp_path):
    """Two data_scripts modules that import each other and share a private helper fail."""
    assert cycles_in({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == ["a -> b -> a"]
    assert cycles_in({"a": {"b"}, "b": set()}) == []
    user = tmp_path / "user.py"
    user.write_text("from data_scripts import fetch as _f\nimport data_scripts.extract\n"
                    "_f._size(1)\ndata_scripts.extract._inside(2)\nfetch._size(3)\n")
    assert private_uses(user) == ["line 3: _f._size", "line 4: data_scripts.extract._inside"]


def test_the_duplicate_and_listing_checks_catch_what_they_should(tmp_path):
    (tmp_path / "a.py").write_text("def shared():\n    pass\n\n\ndef _own():\n    pass\n")
    (tmp_path / "b.py").write_text("class shared:\n    pass\n\n\ndef _own():\n    pass\n")
    assert defined_twice({"a": tmp_path / "a.py", "b": tmp_path / "b.py"}) == \
        {"shared": ["a", "b"]}
    doc = ("# x\n\n## Rooms\n\n```\nssmamba_lite/\n  scan.py         the scan, beside\n"
           "                  dms.py and kernels/ (descriptions name nothing)\n"
           "  kernels/        fast paths\n    scan_cpu.py   numba\n  model.py        net\n"
           "data_scripts/     the registry\n  fetch.py        downloads\n```\n\n## Next\n")
    assert rooms_listing(doc) == {"ssmamba_lite/", "ssmamba_lite/scan.py",
                                  "ssmamba_lite/kernels/", "ssmamba_lite/kernels/scan_cpu.py",
                                  "ssmamba_lite/model.py", "data_scripts/",
                                  "data_scripts/fetch.py"}
    assert "ssmamba_lite/kernels/__init__.py" in listed_modules(rooms_listing(doc))
    with pytest.raises(AssertionError, match="names no file"):
        rooms_listing(doc.replace("  model.py        net", "  the network"))
