# shellcheck shell=sh
# CRI-O's and podman's functions for the node scripts (nodecfg/runtimes/containers.py): facts,
# validate, verify, rollback, and the smoke probes. The unit is crio.service; podman has none.

containers_facts() {
  # the binaries alone (no daemon to wait for), and only those that are there: a fork each counts
  path_of crio
  rec bin.containers "$found"
  version=
  [ -z "$found" ] || version_of crio
  rec version.containers "$version"
  path_of podman
  version=
  [ -z "$found" ] || version_of podman
  rec containers.podman "$found" "$version"
}

# TOML and JSON: parsed by nodecfg before anything is sent
containers_validate() { :; }

# after the write (and crio's reload, when it ran and crio settled active): the registries podman
# resolves now
containers_verify() {
  if command -v podman >/dev/null 2>&1; then
    rec containers.info "$(bounded podman.info "$deadline" podman info --format json 2>/dev/null | b64)"
  fi
}

# a running crio reloads its restored drop-in; one that went down is started
containers_rollback() { reload_rollback crio.service containers; }

# crio active: the drop-in it reads (parsed as TOML by nodecfg)
containers_probe() {
  rec containers.dropin "$(b64 < /etc/containers/registries.conf.d/99-nodecfg.conf 2>/dev/null)"
}

# containers_look REF: the first podman step: is podman there, what registries it resolves (podman
# info may set up its storage on a first run: up to 30 s; it names podman's version too, so no
# `podman --version`: a podman start costs ~25 ms of CPU), has it the image already
containers_look() {
  if ! command -v podman >/dev/null 2>&1; then rec podman no; return 0; fi
  rec podman yes
  rec containers.info "$(bounded podman.info 30 podman info --format json 2>/dev/null | b64)"
  bounded podman.exists 10 podman image exists "$1" 2>/dev/null
  case $? in
    0) rec podman.had yes;;
    1) ;;
    *) rec podman.had unknown;;  # never removed afterwards
  esac
}

# containers_pull REF HAD [VIA]: pull by the name the kubelet would use, within the budget (rc 124:
# out of time); then remove the image unless the node had it before (HAD = yes). VIA non-empty (the
# registry has replicas): podman logs at debug level, and `podman.via <host>` names the last source
# it tried, the one that served the manifest
containers_pull() {
  if [ -n "$3" ]; then
    out=$(bounded podman.pull 0 podman pull --log-level=debug -q "$1" 2>&1)
    rc=$?
    rec podman.pull "$rc" "$(printf '%s\n' "$out" | grep -v '^$' | grep -v '^time="' | tail -n 1 | b64)"
    rec podman.via "$(printf '%s\n' "$out" | sed -n 's/.*Trying to access \\"\([^/\\]*\)\/.*/\1/p' | tail -n 1)"
  else
    out=$(bounded podman.pull 0 podman pull -q "$1" 2>&1)
    rc=$?
    rec podman.pull "$rc" "$(printf '%s' "$out" | grep -v '^$' | tail -n 1 | b64)"
  fi
  if [ "$2" != yes ] && [ $rc = 0 ]; then bounded podman.rmi 30 podman rmi "$1" >/dev/null 2>&1; fi
}
