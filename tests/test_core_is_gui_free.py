"""`napari_unet_lab.core` never imports napari or Qt, so it runs in scripts, notebooks and CI."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import napari_unet_lab.core

CORE = Path(napari_unet_lab.core.__file__).parent
GUI_PACKAGES = {
    "napari",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "magicgui",
    "vispy",
    "superqt",
}


def test_importing_every_core_module_loads_no_gui_package() -> None:
    """A fresh interpreter that imports all of core has no GUI package in sys.modules."""
    script = textwrap.dedent(
        f"""
        import importlib, json, pkgutil, sys
        import napari_unet_lab.core as core
        names = [m.name for m in pkgutil.walk_packages(core.__path__, "napari_unet_lab.core.")]
        for name in names:
            importlib.import_module(name)
        gui = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(GUI_PACKAGES)!r})
        print(json.dumps({{"imported": names, "gui": gui}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "napari_unet_lab.core.formats.tiff" in report["imported"]
    assert report["gui"] == []


def gui_imports(source: str) -> list[str]:
    """List the imports in `source` that reach a GUI package or the plugin's gui module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level >= 2 and (node.module or "").split(".")[0] == "gui":
                found.append("." * node.level + (node.module or ""))
            modules = [node.module or ""] if node.level == 0 else []
        else:
            continue
        for module in modules:
            if module.split(".")[0] in GUI_PACKAGES or module.startswith("napari_unet_lab.gui"):
                found.append(module)
    return found


def test_core_source_has_no_gui_import() -> None:
    """No core file imports a GUI package, not even lazily inside a function."""
    offenders = {
        str(path.relative_to(CORE)): gui_imports(path.read_text(encoding="utf-8"))
        for path in sorted(CORE.rglob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_scan_sees_lazy_and_relative_imports() -> None:
    source = "def f():\n    from qtpy.QtWidgets import QWidget\nfrom ..gui import x\nimport numpy\n"
    assert sorted(gui_imports(source)) == ["..gui", "qtpy.QtWidgets"]
