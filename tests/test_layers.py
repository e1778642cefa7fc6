"""condvae's packages form layers: none imports a higher layer, and no two import each other.

Read from the source with ``ast`` (lazy imports inside functions count too). The package root
``condvae/__init__.py`` ("condvae" below) is the public API, so only the applications import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import condvae

SRC = Path(condvae.__file__).parent

# Lowest first; a package may import its own layer or lower ones.
LAYERS: list[set[str]] = [
    # masks and plotting: pure tensor and figure code that the trainers and the pyramid use
    {"errors", "guards", "streams", "data", "masks", "plotting"},
    {"models"},
    {"store", "checkpoint", "train", "loop", "evaluate", "distributed"},
    {"conditioning"},
    {"partial"},  # amortized methods, registered into conditioning's registry
    {"pyramid", "classifier", "design", "impute"},
    {"condvae", "metrics", "inpaint", "demo", "sharded"},
    {"app"},  # condvae serve: the browser app and its JSON API
    {"cli", "__main__"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def _package_of(module: str) -> str:
    """The condvae package of a dotted module name; "condvae" for the root's own names."""
    parts = module.split(".")
    if len(parts) > 1 and ((SRC / parts[1]).is_dir() or (SRC / f"{parts[1]}.py").exists()):
        return parts[1]
    return "condvae"


def _imports() -> dict[str, set[str]]:
    """Package -> the other condvae packages it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        source = "condvae" if parts == ("__init__",) else parts[0]
        targets = graph.setdefault(source, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                modules = names if node.module == "condvae" else [node.module]
            else:
                continue
            targets.update(_package_of(m) for m in modules if m.split(".")[0] == "condvae")
        targets.discard(source)
    return graph


def test_every_package_has_a_layer() -> None:
    assert not set(_imports()) - set(LAYER), f"packages without a layer: {set(_imports()) - set(LAYER)}"


def test_no_package_imports_a_higher_layer() -> None:
    upward = sorted(
        f"{source} (layer {LAYER[source]}) imports {target} (layer {LAYER[target]})"
        for source, targets in _imports().items()
        for target in targets
        if LAYER.get(target, -1) > LAYER.get(source, len(LAYERS))
    )
    assert not upward, upward


def test_no_import_cycle_between_packages() -> None:
    graph = _imports()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    reach = {name: reachable(name) for name in graph}
    cycles = {
        tuple(sorted(n for n in reach[name] if name in reach.get(n, ())))
        for name in graph
        if name in reach[name]
    }
    assert not cycles, f"packages importing each other (directly or not): {sorted(cycles)}"
