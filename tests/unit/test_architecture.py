"""The shape of the code, checked from its source: the domain (runtime/,
images/) knows nothing of how it is served, and crispy's modules import
each other one way.

Every .py file is parsed with `ast`, never imported, so a violation is
found even where no test runs: function bodies and `if TYPE_CHECKING:`
blocks included.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CRISPY = ("cri", "runtime", "images")
DOMAIN = ("runtime", "images")

# Imports of cri/ the domain may still make, each (file, imported name) and
# why. The test fails when one of them is gone, so the entry goes with it.
KNOWN_TRANSPORT_IMPORTS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    file: str  # relative to the tree's root
    line: int
    # One dotted name per imported thing: `from a.b import c, d` gives a.b.c
    # and a.b.d (c may be a module or a name in a.b; resolve() decides
    # against the files).
    target: str
    # Runs when the module is imported: outside any function and not under
    # `if TYPE_CHECKING:`.
    module_level: bool
    in_function: bool

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    def __init__(self, file: Path, root: Path) -> None:
        self.rel = file.relative_to(root)
        # What relative imports start from: the file's own package.
        self.package = list(self.rel.parent.parts)
        self.imports: list[Import] = []
        self._functions = 0
        self._type_checking = 0

    def _add(self, node: ast.stmt | ast.expr, target: str) -> None:
        self.imports.append(Import(
            str(self.rel), node.lineno, target,
            module_level=self._functions == 0 and self._type_checking == 0,
            in_function=self._functions > 0))

    def _in_function(self, node: ast.AST) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _in_function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking += 1
        for child in node.body:
            self.visit(child)
        self._type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package[:len(self.package) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        if module == "__future__":
            return
        for alias in node.names:
            self._add(node, module if alias.name == "*" else f"{module}.{alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("x") or __import__("x") with a literal name
        # is an import all the same.
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        first = node.args[0] if node.args else None
        if name in ("import_module", "__import__") and isinstance(first, ast.Constant) \
                and isinstance(first.value, str):
            self._add(node, first.value)
        self.generic_visit(node)


def python_files(packages: tuple[str, ...], root: Path = ROOT) -> list[Path]:
    return sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))


def imports_of(file: Path, root: Path = ROOT) -> list[Import]:
    collector = _Collector(file, root)
    collector.visit(ast.parse(file.read_text(), filename=str(file)))
    return collector.imports


def _module_file(dotted: str, root: Path) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def resolve(target: str, root: Path = ROOT) -> Path | None:
    """The crispy file whose names importing `target` uses: the module
    itself, or for `from pkg import name` where name is not a module, pkg.

    The __init__.py files of the packages above it run too, but a module
    that uses only its siblings does not depend on them: Python finds a
    package that is still initialising in sys.modules and goes on. Counting
    them would call every package whose __init__ re-exports its parts a
    cycle.
    """
    parts = target.split(".")
    if parts[0] not in CRISPY:
        return None
    for n in range(len(parts), 0, -1):
        found = _module_file(".".join(parts[:n]), root)
        if found is not None:
            return found
    return None


def _is_transport(target: str) -> bool:
    top, _, rest = target.partition(".")
    if top == "grpc" or top.startswith("grpc_"):
        return True
    return top == "cri" and not (rest == "proto" or rest.startswith("proto."))


def transport_imports(root: Path = ROOT) -> list[Import]:
    return [imp for file in python_files(DOMAIN, root) for imp in imports_of(file, root) if _is_transport(imp.target)]


def test_domain_imports_neither_grpc_nor_cri():
    found = transport_imports()
    offenders = [f"{imp.where()}: imports {imp.target}" for imp in found
                 if (imp.file, imp.target) not in KNOWN_TRANSPORT_IMPORTS]
    assert not offenders, (
        "runtime/ and images/ must not know how they are served: raise runtime.errors kinds, take cri.proto "
        "messages as inputs at most, keep every other part of cri/ and grpc out:\n" + "\n".join(offenders))
    stale = KNOWN_TRANSPORT_IMPORTS - {(imp.file, imp.target) for imp in found}
    assert not stale, f"no longer imported, take them out of KNOWN_TRANSPORT_IMPORTS: {sorted(stale)}"


def function_local_imports(root: Path = ROOT) -> list[Import]:
    return [imp for file in python_files(DOMAIN, root) for imp in imports_of(file, root)
            if imp.in_function and imp.target.partition(".")[0] in CRISPY]


def test_domain_has_no_function_local_crispy_imports():
    offenders = [f"{imp.where()}: imports {imp.target} inside a function" for imp in function_local_imports()]
    assert not offenders, (
        "an import inside a function hides a dependency (usually a cycle): import at module level and "
        "break the cycle instead:\n" + "\n".join(offenders))


def import_graph(packages: tuple[str, ...], root: Path = ROOT, type_hints: bool = False) -> dict[Path, set[Path]]:
    """file -> the crispy files its module-level imports run (with
    `type_hints`, also those it imports only for the type checker)."""
    graph: dict[Path, set[Path]] = {}
    for file in python_files(packages, root):
        edges = graph.setdefault(file, set())
        for imp in imports_of(file, root):
            counted = imp.module_level or (type_hints and not imp.in_function)
            target = resolve(imp.target, root) if counted else None
            if target is not None and target != file:
                edges.add(target)
    return graph


def cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """Every elementary cycle once, as the chain of files from its smallest
    file back to it (so the same cycle always reads the same)."""
    order = {node: i for i, node in enumerate(sorted(graph))}
    found: list[list[Path]] = []

    def walk(start: Path, node: Path, path: list[Path], on_path: set[Path]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                found.append(path + [start])
            elif nxt not in on_path and order.get(nxt, -1) > order[start]:
                on_path.add(nxt)
                walk(start, nxt, path + [nxt], on_path)
                on_path.discard(nxt)

    for start in sorted(graph):
        walk(start, start, [start], {start})
    return found


def chain(cycle: list[Path], root: Path = ROOT) -> str:
    return " -> ".join(str(f.relative_to(root)) for f in cycle)


def test_no_import_cycles():
    found = cycles(import_graph(CRISPY))
    assert not found, "module-level import cycles, each a chain of files:\n" + "\n".join(map(chain, found))


def test_no_cycles_through_type_hints_either():
    """An import under TYPE_CHECKING does not run, but a reader still meets
    a module that names the one above it: a back-reference all the same."""
    found = cycles(import_graph(CRISPY, type_hints=True))
    assert not found, ("import cycles through TYPE_CHECKING imports, each a chain of files (name what is used in a "
                       "Protocol beside the user instead):\n" + "\n".join(map(chain, found)))


# ---- the checks themselves, on made-up trees --------------------------------------


def _write(root: Path, rel: str, text: str = "") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_collector_sees_every_kind_of_import(tmp_path):
    f = _write(tmp_path, "runtime/sub/mod.py", (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import grpc\n"
        "from cri.proto import api_pb2\n"
        "from cri import proto, errors\n"
        "from .. import errors as e\n"
        "if TYPE_CHECKING:\n"
        "    from cri.daemon import Daemon\n"
        "else:\n"
        "    import grpc_status\n"
        "def f():\n"
        "    from runtime.other import x\n"
        "    importlib.import_module('cri.limits')\n"
        "class C:\n"
        "    import images.store\n"))
    got = [(i.line, i.target, i.module_level, i.in_function) for i in imports_of(f, tmp_path)]
    assert got == [
        (2, "typing.TYPE_CHECKING", True, False),
        (3, "grpc", True, False),
        (4, "cri.proto.api_pb2", True, False),
        (5, "cri.proto", True, False),
        (5, "cri.errors", True, False),
        (6, "runtime.errors", True, False),
        (8, "cri.daemon.Daemon", False, False),
        (10, "grpc_status", True, False),
        (12, "runtime.other.x", False, True),
        (13, "cri.limits", False, True),
        (15, "images.store", True, False),
    ]
    assert [(i.where(), i.target) for i in transport_imports(tmp_path)] == [
        ("runtime/sub/mod.py:3", "grpc"), ("runtime/sub/mod.py:5", "cri.errors"),
        ("runtime/sub/mod.py:8", "cri.daemon.Daemon"), ("runtime/sub/mod.py:10", "grpc_status"),
        ("runtime/sub/mod.py:13", "cri.limits")]
    assert [(i.where(), i.target) for i in function_local_imports(tmp_path)] == [
        ("runtime/sub/mod.py:12", "runtime.other.x"), ("runtime/sub/mod.py:13", "cri.limits")]


def test_cycles_are_found_as_chains_of_files(tmp_path):
    _write(tmp_path, "runtime/__init__.py", "from runtime.a import A\n")
    _write(tmp_path, "runtime/a.py", "from runtime import b\nA = 1\n")
    _write(tmp_path, "runtime/b.py", "from runtime.c import C\n")
    _write(tmp_path, "runtime/c.py", "from runtime.a import A\nC = 1\n")
    # Not cycles: an import inside a function or under TYPE_CHECKING does not
    # run at import time, and a module using its package's siblings does not
    # depend on the package's __init__.
    _write(tmp_path, "runtime/d.py", "import runtime.e\n")
    _write(tmp_path, "runtime/e.py", "def f():\n    import runtime.d\n")
    _write(tmp_path, "images/__init__.py", "from images.f import F\n")
    _write(tmp_path, "images/f.py", "from images.g import G\nF = 1\n")
    _write(tmp_path, "images/g.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                    "    from images.f import F\nG = 1\n")
    found = [chain(c, tmp_path) for c in cycles(import_graph(("runtime", "images"), tmp_path))]
    assert found == ["runtime/a.py -> runtime/b.py -> runtime/c.py -> runtime/a.py"]

    a, b, c, d = (tmp_path / n for n in "abcd")
    assert cycles({a: {b}, b: {c, a}, c: {a}, d: set()}) == [[a, b, a], [a, b, c, a]]
