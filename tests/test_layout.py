"""The package's modules import one another without cycles (a module graph without cycles is what
makes "where does this belong" answerable)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gan_cli"


def module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gan_cli"):
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules and target not in (name, "gan_cli"):
                    graph[name].add(target)
    return graph


def test_no_import_cycles() -> None:
    graph = module_graph()
    assert "gan_cli.run" in graph["gan_cli.loop"] and "gan_cli.sweeps" in graph["gan_cli.cli"]

    def path_back(start: str) -> list[str] | None:
        todo, seen = [[start]], set()
        while todo:
            trail = todo.pop()
            for nxt in graph[trail[-1]]:
                if nxt == start:
                    return [*trail, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append([*trail, nxt])
        return None

    cycles = [trail for name in graph if (trail := path_back(name))]
    assert not cycles, f"import cycles: {cycles[:3]}"
