#!/usr/bin/env bash
# Set up (first run only), lint, type-check, and run the whole CPU test suite. Arguments go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh dev
scripts/install_chromium.sh  # Debian's headless Chromium for the web console's browser tests
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
