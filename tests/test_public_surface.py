"""Modules talk to each other through public names only, and the core says what it offers.

A private name (`_x`) is a module's own business: another module that imports it, or reaches
it through a module object (``tiling._run``), breaks silently when the owner changes it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import napari_unet_lab
import napari_unet_lab.core

PACKAGE = Path(napari_unet_lab.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
LARGEST_MODULE = 500  # lines: a module a newcomer can read in one sitting


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    """Return the absolute module an ``from … import`` statement names."""
    if node.level == 0:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def private_uses(source: str, path: Path) -> list[str]:
    """List the private names of other plugin modules that `source`, living at `path`, uses."""
    tree = ast.parse(source)
    own = _module_name(path)
    found, module_aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(path, node)
            if not source.startswith("napari_unet_lab") or source == own:
                continue
            for alias in node.names:
                if _is_private(alias.name) or _is_private(source.rsplit(".", 1)[-1]):
                    found.append(f"{source}.{alias.name}")
                else:
                    module_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("napari_unet_lab"):
                    module_aliases.add((alias.asname or alias.name).split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _is_private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_uses_another_modules_private_names(path: Path) -> None:
    assert private_uses(path.read_text(encoding="utf-8"), path) == []


def test_the_check_finds_private_imports() -> None:
    """The scanner itself: both ways of reaching a private name are caught."""
    source = "from .tiling import _run, plan_axis\nfrom . import tiling\ntiling._batches(1)\n"
    where = PACKAGE / "core" / "predict" / "example.py"  # relative imports resolve from here
    assert private_uses(source, where) == [
        "napari_unet_lab.core.predict.tiling._run",
        "tiling._batches",
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_reads_in_one_sitting(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= LARGEST_MODULE, f"{path.name} has {lines} lines; split it by concept"


def test_core_declares_its_public_api() -> None:
    """`napari_unet_lab.core` re-exports what it offers, and every name it lists exists."""
    names = napari_unet_lab.core.__all__
    assert len(names) == len(set(names))
    missing = [name for name in names if not hasattr(napari_unet_lab.core, name)]
    assert missing == []
    for name in names:
        assert not _is_private(name)
    for expected in (
        "UNet",
        "predict_tiled",
        "segment",
        "load_model",
        "save_model",
        "prepare_training",
    ):
        assert expected in names
