#!/usr/bin/env bash
# Run the napari-unet-lab demo; arguments are passed on to it (try --help).
# Without a screen ($DISPLAY unset) it runs headless on a virtual screen.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"

if [ -n "${DISPLAY:-}" ]; then
    exec .venv/bin/python -m napari_unet_lab.gui.demo "$@"
else
    exec xvfb-run -a .venv/bin/python -m napari_unet_lab.gui.demo --headless "$@"
fi
