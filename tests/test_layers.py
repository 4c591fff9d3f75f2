"""The package's architecture, checked from its imports: every import points down the layers (or stays in its
own), and no import closes a cycle, between files or between folders.

Each module of dsocr/ and the top-level modules are parsed with `ast` (nothing is imported), and every import is
resolved to the module it names: absolute and relative, at the top of a file, inside a function, or under
`if TYPE_CHECKING:` (a type-only import is still an arrow between two modules)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("app.py", "settings.py", "schemas.py", "ocr_engine.py")

# From the top down: a module may import its own layer and the layers below it, never one above. The shared
# modules at the bottom are importable from anywhere and import nothing but each other. A module's layer is the
# one of the longest prefix below that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # Entry points: the app (created, its lifespan, routers mounted), the CLI and its commands (dsocr/cli).
    ("app", ("app", "dsocr.__main__", "dsocr.cli")),
    ("api", ("dsocr.api",)),  # the HTTP edge: routes, middleware, uploads, streaming, the process's lifecycle
    ("jobs", ("dsocr.jobs",)),  # durable jobs and their workers
    ("pipeline", ("dsocr.pipeline",)),  # a checked document to its answer: pages, cleaning, artifacts, runs
    ("serving", ("dsocr.serving",)),  # how a page reaches a model: the local host, the vLLM pool, admission
    # Finding, building and running one checkpoint: the demo's, and which install profile one needs.
    ("engines", ("dsocr.engines", "dsocr.demo", "dsocr.tiny", "dsocr.profiles")),
    ("shared", ("dsocr", "dsocr.catalogue", "dsocr.errors", "dsocr.logs", "dsocr.store",
                "settings", "schemas", "ocr_engine")),
]
LAYER_RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


def module_files() -> dict[str, Path]:
    """Every module of the service, by dotted name."""
    files = {name.removesuffix(".py"): ROOT / name for name in TOP_LEVEL}
    for path in sorted((ROOT / "dsocr").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    """What `module` imports, as (dotted name, line): `from a import b` gives both a.b and a, since b may be a
    module or a name defined in a."""
    is_package = path.name == "__init__.py"
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
            names.append((base, node.lineno))
    return names


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The service's module that `name` names (itself, or the module defining it), or None for anything else."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """Each module's imports of the service's own modules, with the line of the first."""
    modules = module_files()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        targets: dict[str, int] = {}
        for name, line in imported_names(module, path):
            target = resolve(name, modules)
            # `from dsocr.api import x` names the package only when x is not a module of it.
            if target is not None and target != module and not any(t.startswith(target + ".") for t in targets):
                targets.setdefault(target, line)
        # A name resolved to a package as well as to its module counts once, as the module.
        graph[module] = {t: line for t, line in targets.items() if not any(o.startswith(t + ".") for o in targets)}
    return graph


def layer_of(module: str) -> str:
    matches = [(len(prefix), name) for name, prefixes in LAYERS for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def folder_of(module: str) -> str:
    """The folder a module lives in; the shared modules are one unit, wherever they live (the top level the
    service's design names, and dsocr/), since they import each other."""
    if layer_of(module) == "shared":
        return "(shared)"
    if module == "dsocr.__main__":  # an entry point, like app.py, though it lives in dsocr/ beside engine modules
        return "(top level)"
    path = module_files()[module].relative_to(ROOT).parent
    return str(path) if str(path) != "." else "(top level)"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            here, there = layer_of(module), layer_of(target)
            if LAYER_RANK[there] < LAYER_RANK[here]:
                found.append(f"{module} ({here}) imports {target} ({there}) at line {line}")
    return found


def test_every_module_is_in_a_layer() -> None:
    for module in module_files():
        layer_of(module)


def test_no_import_points_up_a_layer() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_cycle_between_files() -> None:
    cycle = find_cycle({module: set(targets) for module, targets in import_graph().items()})
    assert cycle is None, " -> ".join(cycle or [])


def test_no_import_cycle_between_folders() -> None:
    folders: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        edges = folders.setdefault(folder_of(module), set())
        edges.update(folder_of(target) for target in targets if folder_of(target) != folder_of(module))
    cycle = find_cycle(folders)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_checks_see_an_upward_import_and_a_cycle() -> None:
    """The checks themselves: a made-up graph with one arrow up and one cycle is caught by both."""
    graph = {"dsocr.serving.x": {"dsocr.api.y": 1}, "dsocr.api.y": {"dsocr.serving.x": 2}}
    assert upward_imports(graph) == ["dsocr.serving.x (serving) imports dsocr.api.y (api) at line 1"]
    assert find_cycle({module: set(targets) for module, targets in graph.items()}) is not None
