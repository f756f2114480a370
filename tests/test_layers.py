"""The package's import structure matches docs/architecture.json: every import points to a
lower part, no forbidden arrow, and no import circle (imports inside functions count)."""
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PICTURE = json.loads((ROOT / "docs" / "architecture.json").read_text())
PACKAGE = ROOT / "whisperlite"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def part_of(path: Path) -> str:
    """The part whose most specific `is` entry holds this file."""
    rel = path.relative_to(ROOT).as_posix()
    best, best_len = None, -1
    for name, part in PICTURE["parts"].items():
        for entry in part["is"]:
            if (rel == entry or (entry.endswith("/") and rel.startswith(entry))) and len(entry) > best_len:
                best, best_len = name, len(entry)
    assert best is not None, f"{rel} belongs to no part of docs/architecture.json"
    return best


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (annotations only: never imported)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(path: Path) -> set[str]:
    """Modules of this package that `path` imports when it runs, anywhere in the file."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports pkg.mod when it is a module, else a name of pkg
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("whisperlite"):
                found.add(name)
    return found


GRAPH = {m: imports_of(p) - {m} for m, p in MODULES.items()}
EDGES = [(a, b) for a, bs in GRAPH.items() for b in bs]


def test_every_module_belongs_to_a_part():
    for path in MODULES.values():
        part_of(path)


LEVELS = {name: part["level"] for name, part in PICTURE["parts"].items()}
FORBIDDEN = {(f["from"], f["to"]) for f in PICTURE["forbidden"]}


def upward(edges: list[tuple[str, str]]) -> list[str]:
    """Imports that do not point to a lower part (inside a part, anything goes but circles)."""
    bad = []
    for a, b in edges:
        pa, pb = part_of(MODULES[a]), part_of(MODULES[b])
        if pa != pb and LEVELS[pb] >= LEVELS[pa]:
            bad.append(f"{a} ({pa}) -> {b} ({pb})")
    return bad


def forbidden(edges: list[tuple[str, str]]) -> list[str]:
    return [f"{a} -> {b}" for a, b in edges if (part_of(MODULES[a]), part_of(MODULES[b])) in FORBIDDEN]


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, as the modules along it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_imports_point_down():
    bad = upward(EDGES)
    assert not bad, "imports that do not point to a lower part:\n" + "\n".join(bad)


def test_no_forbidden_arrow():
    bad = forbidden(EDGES)
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    found = circle(GRAPH)
    assert found is None, "import circle: " + " -> ".join(found)


def test_the_checks_catch_what_they_guard():
    writer_to_loop = [("whisperlite.output.writers", "whisperlite.transcription.transcribe")]
    assert upward(writer_to_loop) and forbidden(writer_to_loop)
    assert not upward([("whisperlite.output.writers", "whisperlite.transcription.results")])
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert circle({"a": {"b"}, "b": set()}) is None
