"""The package's layers: imports run one way, from the command line down to the mathematics, and no
module imports itself back through others (function-local imports count too); no module is over 300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: bottom to top; a package imports only its own modules and packages of lower layers
LAYERS = (("errors",), ("model", "nnunet"), ("data",), ("trainers", "planners"), ("evaluation",),
          ("experiments", "benchmark"), ("cli",))
LAYER_OF = {package: rank for rank, names in enumerate(LAYERS) for package in names}


def module_files() -> dict[str, Path]:
    """Every module of the distribution by dotted name (trainers and planners live in folders of their own)."""
    files = {}
    for folder, package in ((ROOT / "nnunet_dsmm", "nnunet_dsmm"), (ROOT / "trainers", "nnunet_dsmm.trainers"),
                            (ROOT / "planners", "nnunet_dsmm.planners")):
        for path in folder.rglob("*.py"):
            if "_build" in path.parts:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts[:-1], *([] if parts[-1] == "__init__" else [parts[-1]])))
            files[name] = path
    return files


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its text."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nnunet_dsmm"):
                targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("nnunet_dsmm")}
        resolved = set()
        for target in targets:
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target not in (name, "nnunet_dsmm"):
                resolved.add(target)
        graph[name] = resolved
    return graph


def package_of(module: str) -> str:
    return module.split(".")[1]


def test_no_module_imports_itself_back():
    graph = import_graph()
    for start in graph:
        seen, frontier = set(), list(graph[start])
        while frontier:
            module = frontier.pop()
            assert module != start, f"import circle through {start}"
            if module not in seen:
                seen.add(module)
                frontier += graph[module]


def test_imports_run_down_the_layers():
    upward = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
              if package_of(module) != package_of(target)
              and LAYER_OF[package_of(target)] >= LAYER_OF[package_of(module)]]
    assert not upward, upward


def test_no_module_is_over_300_lines():
    long = {name: n for name, path in module_files().items() if (n := len(path.read_text().splitlines())) > 300}
    assert not long, f"split these modules by concern: {long}"
