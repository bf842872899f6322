#!/usr/bin/env bash
# The whole job on the local lab: a master and 3 nodes, the registry with the images, every
# node configured, then proof that every node pulls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
N=.venv/bin/nodecfg
LAB=.venv/bin/nodecfg-lab   # the dev lab (lab/), not part of nodecfg
$LAB up --nodes "${NODES:-3}" --flavors "${FLAVORS:-bookworm}"
INV=$($LAB inventory)
$N registry-up -i "$INV"
$N configure-nodes -i "$INV"
$N smoke-test -i "$INV"
