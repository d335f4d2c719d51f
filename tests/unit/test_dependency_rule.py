"""The dependency rule, read from the imports themselves: flows -> doors -> runner ->
stages -> providers -> money -> spec -> infra -> lifecycle -> errors;
the emulator imports nothing of the product, the product imports the emulator only in the
CLI's local commands; and no module-level import cycle anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each layer may import itself and the layers after it in this list.
LAYERS = [
    "grok_batch",  # the Python API: a door like the CLI
    "flows",
    "tasks.doors",
    "tasks.runner",
    "tasks.stages",
    "tasks.providers",
    "tasks.money",
    "tasks.spec",
    "tasks.infra",
    "tasks.lifecycle",  # the tables the ledger checks transitions against
    "tasks.infra.errors",  # the error types everyone raises
]
ALLOWED_EMULATOR_IMPORTERS = {"flows.cli.local", "flows.cli"}  # the demo and `grok-batch emulator`


def _layer(module: str) -> str | None:
    """The most specific layer a module belongs to."""
    matches = [layer for layer in LAYERS if module == layer or module.startswith(layer + ".")]
    return max(matches, key=len, default=None)


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("grok_batch", "flows", "tasks", "emulator"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # `if TYPE_CHECKING:` blocks hold no runtime import
        nodes = [n for n in nodes if not isinstance(n, ast.If)]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in ("grok_batch", "flows", "tasks", "emulator")}


def test_every_import_follows_the_dependency_rule() -> None:
    modules = _modules()
    broken = []
    for name, path in modules.items():
        for target in _imports(path, top_level_only=False):
            if target not in modules:
                continue  # `from pkg import name` where name is not a module
            if target.startswith("emulator"):
                if not (name.startswith("emulator") or name in ALLOWED_EMULATOR_IMPORTERS):
                    broken.append(f"{name} imports {target}")
                continue
            if name.startswith("emulator"):
                broken.append(f"{name} imports {target}")
                continue
            source, goal = _layer(name), _layer(target)
            if source is None or goal is None:
                continue
            if LAYERS.index(goal) < LAYERS.index(source):
                broken.append(f"{name} ({source}) imports {target} ({goal})")
    assert not broken, "\n".join(sorted(broken))


def test_no_module_level_import_cycles() -> None:
    modules = _modules()
    graph = {
        name: {t for t in _imports(path, top_level_only=True) if t in modules and t != name}
        for name, path in modules.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1 and not _package_of(nxt, node):
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def _package_of(package: str, module: str) -> bool:
    """A module importing its own package's __init__ is not a cycle of ours."""
    return module.startswith(package + ".")
