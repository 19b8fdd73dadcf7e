"""The package's shape: no import cycle, no module importing the package ``__init__``, no argparse
in the library, and the names scripts outside the test suite rely on still importable.

Imports are read from the source with ``ast``, those inside functions included, so a cycle that
only a lazy import hides is found too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "geminifusion"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports (``from a import b`` counts as ``a.b`` if a module)."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    table = modules()
    known = set(table)
    # The package __init__ only names its exports lazily (and for type checkers).
    return {name: imports(path, known) for name, path in table.items() if name != PACKAGE}


def test_no_module_imports_the_package_init():
    offenders = sorted(name for name, deps in graph().items() if PACKAGE in deps)
    assert not offenders, f"these import the package __init__: {offenders}"


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(edges.get(name, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)


def test_lower_rooms_never_import_higher_ones():
    """commands -> engine / weights / runs -> configs -> segmentor -> backbones -> fusion."""
    order = ["commands", "engine", "weights", "runs", "configs", "segmentor", "backbones"]
    rank = {room: i for i, room in enumerate(order)}

    def room(name: str) -> str | None:
        first = name.split(".")[1] if "." in name else None
        return first if first in rank else None

    wrong = []
    for name, deps in graph().items():
        here = room(name)
        for dep in deps:
            there = room(dep)
            if here and there and rank[there] < rank[here]:
                wrong.append(f"{name} -> {dep}")
    assert not wrong, wrong


def test_the_library_has_no_argparse():
    for name, path in modules().items():
        if name.startswith((f"{PACKAGE}.commands", f"{PACKAGE}.cli")):
            continue
        assert "argparse" not in path.read_text(encoding="utf-8"), name


def test_detection3d_uses_only_the_fusion_layer():
    edges = graph()
    outside = {
        dep
        for name, deps in edges.items()
        if name.startswith(f"{PACKAGE}.detection3d")
        for dep in deps
        if not dep.startswith(f"{PACKAGE}.detection3d")
    }
    assert outside <= {f"{PACKAGE}.fusion", f"{PACKAGE}.layers"}, outside


STABLE_NAMES = {
    PACKAGE: [
        "build_segmentor",
        "MiTConfig",
        "SwinConfig",
        "DeliverConfig",
        "VARIANTS",
        "Segmentor",
        "GeminiFusion",
        "load_reference_checkpoint",
        "to_reference_state_dict",
        "from_pretrained",
        "load_pretrained_backbone",
        "load_model",
        "save_pretrained",
        "__version__",
    ],
    f"{PACKAGE}.checkpoints": [
        "read_checkpoint",
        "unwrap_state_dict",
        "reference_key_map",
        "from_reference_state_dict",
    ],
    f"{PACKAGE}.configs": ["RunConfig"],
    f"{PACKAGE}.engine.losses": ["segmentation_loss"],
    f"{PACKAGE}.engine.schedule": ["PolyWarmup", "build_optimizer"],
    f"{PACKAGE}.engine.train": ["freeze_batchnorm"],
    f"{PACKAGE}.runtime": ["keep_freed_memory"],
}


@pytest.mark.parametrize("module", sorted(STABLE_NAMES))
def test_names_other_scripts_use_stay_importable(module):
    imported = importlib.import_module(module)
    missing = [name for name in STABLE_NAMES[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lost {missing}"
