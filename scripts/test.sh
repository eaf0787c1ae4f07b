#!/usr/bin/env bash
# Run the test suite; arguments are passed on to pytest (e.g. -m "not slow", tests/core).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"

if [ -n "${DISPLAY:-}" ]; then
    exec .venv/bin/python -m pytest "$@"
else
    # The GUI tests open real napari windows, so they need a (virtual) screen.
    exec xvfb-run -a .venv/bin/python -m pytest "$@"
fi
