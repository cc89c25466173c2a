"""The package's layers (docs/architecture.md): each part imports only the parts below it, and no module grows past
the size a reader can hold (the phantom generator excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medsemiseg"

#: each part of the package and the parts it may import (docs/architecture.md, "Layers"); a part not listed here is
#: a new one, which the test asks to place
LAYERS: dict[str, set[str]] = {
    # foundations: no import of the package
    "cli_errors": set(),
    "runlock": set(),
    "atomic_io": set(),
    "runrecord": set(),
    "checkpoint_io": {"atomic_io"},
    "random_state": set(),
    "losses": set(),
    "distributed": set(),
    "tasks": set(),
    # data, pure ops, models, scores
    "data": {"atomic_io", "cli_errors", "runlock", "runrecord", "tasks"},
    "transforms": set(),
    "networks": set(),
    "metrics": {"atomic_io", "transforms"},
    # pieces that live across iterations, the methods, the engine
    "handlers": {"atomic_io", "checkpoint_io", "data", "distributed", "runrecord"},
    "methods": {"distributed", "handlers", "losses", "networks", "transforms"},
    "engines": {"distributed", "random_state"},
    "tracking": {"engines"},
    # what the bundle configs call
    "bundle": {"atomic_io", "checkpoint_io", "cli_errors", "data", "distributed", "engines", "handlers", "methods",
               "random_state", "runlock", "runrecord", "tasks", "tracking"},
    # applications on top: the benchmark, the MONAI Label helpers, the prepare command
    "benchmark": {"atomic_io", "bundle", "data", "engines", "methods", "networks", "runlock", "tasks", "tracking"},
    "labelapp": {"atomic_io", "bundle", "checkpoint_io", "cli_errors", "data", "methods", "tracking"},
    "prepare": {"data"},
}

#: lines a module may have; the phantom generator draws anatomy and is read function by function
MAX_LINES = 600
LONGER = {"data/synthetic.py"}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0][:-3] if len(rel) == 1 else rel[0]


def _imported_parts(path: Path) -> set[str]:
    """The parts of the package ``path`` imports (absolute and relative imports, at any depth of the module)."""
    here = list(path.relative_to(PACKAGE).parts[:-1])
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (node.module or "").split(".") if node.level == 0 else (
                ["medsemiseg", *here[: len(here) - node.level + 1], *((node.module or "").split(".") if node.module
                                                                       else [])])
            names = [f"medsemiseg.{a.name}" for a in node.names] if base == ["medsemiseg"] else [".".join(base)]
        parts |= {n.split(".")[1] for n in names if n.startswith("medsemiseg.")}
    return parts


def test_each_part_imports_only_the_parts_below_it():
    wrong = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        if part == "__init__":
            continue
        assert part in LAYERS, f"{path}: a new part of the package; place it in LAYERS and docs/architecture.md"
        extra = _imported_parts(path) - LAYERS[part] - {part}
        if extra:
            wrong[str(path.relative_to(PACKAGE))] = sorted(extra)
    assert not wrong, f"imports across the layers of docs/architecture.md: {wrong}"


def test_the_layers_have_no_cycle():
    done: set[str] = set()

    def visit(part: str, stack: tuple[str, ...]) -> None:
        assert part not in stack, f"import cycle between parts: {' -> '.join(stack + (part,))}"
        if part not in done:
            for below in LAYERS[part]:
                visit(below, stack + (part,))
            done.add(part)

    for part in LAYERS:
        visit(part, ())


def test_no_module_is_longer_than_a_reader_can_hold():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(PACKAGE)) not in LONGER}
    assert not long, f"modules over {MAX_LINES} lines: {long}; split them by concern"


def test_the_architecture_page_states_these_layers():
    """docs/architecture.md's table of what each part may import says what LAYERS enforces."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    stated: dict[str, set[str]] = {}
    for line in text.split("| part | may import", 1)[1].split("\n\n", 1)[0].splitlines()[2:]:
        parts_cell, imports_cell = line.strip("|").split("|")[:2]
        imports = set() if "nothing" in imports_cell else {w.strip(" `") for w in imports_cell.split(",")}
        for name in parts_cell.split(","):
            stated[name.strip(" `").removesuffix(".py")] = imports
    assert stated == LAYERS, "update the table in docs/architecture.md to LAYERS"
