#!/usr/bin/env bash
# The test command: unit tests and the e2e suite (the real nodecfg CLI against a lab fleet).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -p no:cacheprovider "$@" tests
