"""napari finds the plugin after `pip install .` and after `pip install -e .`.

Each case installs a copy of the repository into a scratch virtual environment and asks npe2,
in a fresh process, which contributions the plugin makes. The scratch environment reuses this
environment's installed packages through symlinks, minus napari-unet-lab itself, so nothing is
downloaded or built but our own package and each case takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "napari-unet-lab"
SAMPLE_FILES = {
    f"nuclei_{name}{suffix}.tif"
    for name in ("1", "2", "3", "large", "brightfield", "tissue")
    for suffix in ("", "_labels")
}

pytestmark = pytest.mark.slow

# Runs inside the scratch environment and prints what napari would see, as JSON.
DISCOVER = textwrap.dedent(
    """
    import json
    import os
    from importlib.resources import files

    from npe2 import PluginManager

    import napari_unet_lab

    pm = PluginManager.instance()
    pm.discover(include_npe1=False)
    manifest = pm.get_manifest("napari-unet-lab")
    contributions = manifest.contributions
    package = files("napari_unet_lab")
    layers = pm.commands.execute("napari-unet-lab.nuclei_sample")
    print(json.dumps({
        "package_file": napari_unet_lab.__file__,
        "manifest_file": os.fspath(package / "napari.yaml"),
        "sample_folder": os.fspath(package / "sample_data"),
        "commands": {c.id: c.python_name for c in contributions.commands},
        "widgets": [[w.command, w.display_name] for w in contributions.widgets],
        "sample_data": [[s.key, s.display_name, s.command] for s in contributions.sample_data],
        "writers": [
            [w.command, [str(t) for t in w.layer_types], w.filename_extensions]
            for w in contributions.writers
        ],
        "readers": [
            [r.command, r.filename_patterns, r.accepts_directories]
            for r in contributions.readers
        ],
        "sample_layers": [[list(d.shape), str(d.dtype), kind] for d, _, kind in layers],
    }))
    """
)


def copy_repository(destination: Path) -> Path:
    """Copy the files git would commit (tracked and untracked-not-ignored), keeping symlinks.

    Building in a copy keeps `build/` and `*.egg-info` out of the work tree.
    """
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listing.returncode != 0:  # not a git checkout, e.g. an unpacked sdist
        ignore = shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        )
        shutil.copytree(REPO, destination, symlinks=True, ignore=ignore)
        return destination
    for name in sorted(set(listing.stdout.decode().split("\0")) - {""}):
        source, target = REPO / name, destination / name
        if not source.is_symlink() and not source.exists():
            continue  # tracked but deleted in the work tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    return destination


def belongs_to_plugin(entry: Path) -> bool:
    """Tell whether a site-packages entry is part of an installed napari-unet-lab."""
    if "napari_unet_lab" in entry.name.lower().replace("-", "_"):
        return True
    if entry.suffix == ".pth" and entry.is_file():
        text = entry.read_text(errors="replace")
        return "napari_unet_lab" in text or str(REPO) in text
    return False


def make_scratch_environment(root: Path) -> Path:
    """Create a virtual environment that sees this one's packages except napari-unet-lab.

    Returns
    -------
    Path
        The scratch environment's Python interpreter.
    """
    farm = root / "site-farm"
    farm.mkdir()
    site_folders = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    for folder in sorted(site_folders):
        for entry in folder.iterdir():
            link = farm / entry.name
            if entry.name == "__pycache__" or link.exists() or belongs_to_plugin(entry):
                continue
            link.symlink_to(entry)

    base_python = getattr(sys, "_base_executable", sys.executable)
    environment = root / "venv"
    subprocess.run([base_python, "-m", "venv", "--without-pip", environment], check=True)
    python = environment / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # addsitedir (unlike a plain path line) also runs the .pth files inside the farm.
    (Path(purelib) / "site_farm.pth").write_text(f"import site; site.addsitedir({str(farm)!r})\n")
    return python


def clean_environment() -> dict[str, str]:
    """Return os.environ without variables that would leak this checkout into a subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-editable"])
def test_napari_discovers_the_installed_plugin(tmp_path: Path, editable: bool) -> None:
    """Both install modes give napari the widget, the samples, the writers and the reader."""
    source = copy_repository(tmp_path / "repo")
    python = make_scratch_environment(tmp_path)
    env = clean_environment()
    install = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    install += ["--no-build-isolation", *(["-e"] if editable else []), str(source)]
    subprocess.run(install, check=True, env=env, cwd=tmp_path)

    found = subprocess.run(
        [python, "-c", DISCOVER],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the repository, so `import napari_unet_lab` finds the install
    )
    assert found.returncode == 0, found.stderr
    seen = json.loads(found.stdout.strip().splitlines()[-1])

    assert seen["commands"]["napari-unet-lab.predict"] == (
        "napari_unet_lab.gui.predict_widget:PredictWidget"
    )
    assert ["napari-unet-lab.predict", "U-Net: Predict"] in seen["widgets"]
    assert seen["sample_data"][0] == [
        "nuclei",
        "Nuclei (BBBC039, fluorescence)",
        "napari-unet-lab.nuclei_sample",
    ]
    assert seen["writers"] == [
        ["napari-unet-lab.write_labels", ["labels"], [".tif", ".tiff"]],
        ["napari-unet-lab.write_labels_zarr", ["labels"], [".zarr"]],
    ]
    assert seen["commands"]["napari-unet-lab.write_labels"] == (
        "napari_unet_lab.writers:write_labels_tiff"
    )
    assert seen["commands"]["napari-unet-lab.write_labels_zarr"] == (
        "napari_unet_lab.writers:write_labels_zarr"
    )
    assert seen["readers"] == [
        ["napari-unet-lab.read_tiff", ["*.tif", "*.tiff"], False],
        ["napari-unet-lab.read_zarr", ["*.zarr"], True],
    ]
    assert seen["commands"]["napari-unet-lab.read_tiff"] == (
        "napari_unet_lab.readers:get_tiff_reader"
    )
    assert seen["commands"]["napari-unet-lab.read_zarr"] == "napari_unet_lab.readers:get_reader"
    assert seen["sample_layers"] == [
        [[520, 696], "uint16", "image"],
        [[520, 696], "uint16", "labels"],
    ]

    package_file = Path(seen["package_file"])
    manifest = Path(seen["manifest_file"])
    samples = Path(seen["sample_folder"])
    assert manifest.is_file()
    assert SAMPLE_FILES <= {p.name for p in samples.iterdir() if p.is_file()}
    if editable:
        # The import comes from the source copy, whose symlinks point to the top-level files.
        assert package_file.is_relative_to(source / "src")
        assert manifest.resolve() == (source / "napari.yaml").resolve()
    else:
        # The wheel carried real files, not symlinks back into a source tree.
        assert package_file.is_relative_to(tmp_path / "venv")
        assert not manifest.is_symlink() and not samples.is_symlink()
        assert manifest.read_bytes() == (REPO / "napari.yaml").read_bytes()
        for name in SAMPLE_FILES:
            assert not (samples / name).is_symlink()
            assert (samples / name).read_bytes() == (REPO / "sample_data" / name).read_bytes()
