#!/usr/bin/env bash
# Set up everything needed to run the demo and the tests: system libraries for Qt on a virtual
# screen, and a virtual environment in .venv with the package installed in editable mode.
# Safe to rerun: each step is skipped when it is already done.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# Debian packages for napari's Qt window under Xvfb (xvfb-run needs xauth too).
system_packages=(
    xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libfontconfig1 libx11-xcb1
    libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
    libdbus-1-3 fonts-dejavu-core
)

install_system_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "setup: not a Debian-like system; make sure Xvfb and Qt's X11 libraries are installed."
        return
    fi
    local missing=()
    for package in "${system_packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return
    fi
    if [ "$(id -u)" -eq 0 ]; then
        echo "setup: installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "setup: these system packages are missing; install them with:"
        echo "    sudo apt-get install -y ${missing[*]}"
    fi
}

install_python_environment() {
    local python="$repo/.venv/bin/python"
    local stamp="$repo/.venv/.napari-unet-lab-setup"
    local wanted
    # Reinstall only when what we ask pip for changed.
    wanted="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"

    if [ ! -x "$python" ]; then
        echo "setup: creating .venv"
        python3 -m venv .venv
        "$python" -m pip install --upgrade pip
    fi
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] \
        && "$python" -c "import napari_unet_lab" 2>/dev/null; then
        return
    fi
    echo "setup: installing napari-unet-lab and its dependencies into .venv"
    "$python" -m pip install -c constraints.txt -e ".[pyqt6,test,bench]"
    # qtpy prefers PyQt5 when both are there: an environment set up before Qt6 drops it
    if "$python" -m pip show PyQt5 >/dev/null 2>&1; then
        "$python" -m pip uninstall -y PyQt5 PyQt5-Qt5 PyQt5-sip
    fi
    echo "$wanted" >"$stamp"
}

install_system_packages
install_python_environment
echo "setup: done (.venv is ready)"
