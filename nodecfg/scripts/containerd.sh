# shellcheck shell=sh
# containerd's functions for the node scripts (nodecfg/runtimes/containerd.py): facts, validate,
# verify, rollback, the smoke probe and its second step (ctr and crictl pulls).

containerd_facts() {
  path_of containerd
  rec bin.containerd "$found"
  [ -n "$found" ] || return 0  # not installed: nothing more to ask
  version_of containerd  # the binary alone (no daemon to wait for), or its cached answer
  rec version.containerd "$version"
}

# containerd_validate KIND TEMP PATH: containerd's own reading of the new file; the verify after
# the restart reuses its dump
containerd_validate() {
  [ "$1" = containerd ] || return 0
  if dump=$(bounded containerd.validate "$deadline" containerd -c "$2" config dump 2>"$2.err"); then
    rec containerd.dump "$(printf '%s\n' "$dump" | b64)"
  elif [ $? = 124 ]; then
    fail "$3" "containerd config dump gave no answer within ${deadline}s"
  else
    fail "$3" "$(cat "$2.err")"
  fi
  rm -f "$2.err"
}

# every probe is time-limited: `ctr` with no daemon behind the socket otherwise waits ~10 s per
# attempt, and a containerd in a restart loop must fail the node, not hang it
containerd_plugins() { plugins=$(bounded containerd.plugins 3 ctr --connect-timeout 1s plugins ls 2>/dev/null); }

# after a restart: wait (bounded) until containerd answers with its plugin list, then report the
# CRI plugin's status (the running daemon loaded the new config) and the config dump
containerd_verify() {
  wait_until "$deadline" 0.2 containerd_plugins
  [ -z "$dump" ] && rec containerd.dump "$(bounded containerd.dump "$deadline" containerd config dump 2>/dev/null | b64)"
  rec containerd.cri "$(printf '%s\n' "$plugins" \
    | awk '$2 == "io.containerd.grpc.v1.cri" || $2 == "cri" {print $NF; exit}')"
}

# a hung start (an ExecStartPre that never returns) is stopped, then containerd is started on its
# restored files if it was running
containerd_rollback() {
  if changed || [ -n "$job" ] || down; then
    bounded systemctl "$deadline" systemctl stop containerd.service >/dev/null 2>&1
    bounded systemctl "$deadline" systemctl reset-failed containerd.service 2>/dev/null
    if [ "$was_active" = 1 ]; then
      bounded systemctl "$deadline" systemctl --no-block start containerd.service 2>&1 | tail -n 1 \
        | while IFS= read -r line; do rec actionlog.containerd "$line"; done
    fi
  fi
}

# its effective config, read as TOML by nodecfg; the pulls need the certs dir it names, so they
# run in a second step (containerd_pulls)
containerd_probe() {
  rec containerd.dump "$(bounded containerd.dump 10 containerd config dump 2>/dev/null | b64)"
}

# containerd_pull TAG REF: ctr pulls REF through $certs (and crictl, where installed); rc 124: out
# of time, or containerd did not even list its images (then nothing is pulled). With $via (the
# registry has replicas) ctr logs at debug level, and `TAG.via <host>` names the host that resolved
# REF (ctr of containerd 1.x resolves itself and says so; 2.x's transfer service does not)
containerd_pull() {
  # the CRI plugin adds a `sha256:<config id>` ref beside every image in k8s.io. Ours goes too, or
  # each run would leave one behind; it is the new sha256: ref whose target digest is our image's.
  # Refs that others (the kubelet) made meanwhile point elsewhere and stay.
  before=$(bounded containerd.list 10 ctr -n k8s.io images ls -q 2>/dev/null)
  if [ $? = 124 ]; then rec "$1" 124 ""; return 0; fi
  had=$(printf '%s\n' "$before" | grep -qxF -- "$2" && echo yes)
  if [ -n "$via" ]; then
    out=$(bounded "$1" 0 ctr --debug -n k8s.io images pull --hosts-dir "$certs" "$2" 2>&1)
    rc=$?
    rec "$1" "$rc" "$(printf '%s\n' "$out" | grep -v '^time="' | tail -n 1 | b64)"
    rec "$1.via" "$(printf '%s\n' "$out" | sed -n '/msg=resolved /s/.* host="\{0,1\}\([^" ]*\).*/\1/p' | tail -n 1)"
  else
    out=$(bounded "$1" 0 ctr -n k8s.io images pull --hosts-dir "$certs" "$2" 2>&1)
    rc=$?
    rec "$1" "$rc" "$(printf '%s' "$out" | tail -n 1 | b64)"
  fi
  if command -v crictl >/dev/null; then
    out=$(bounded crictl 0 crictl pull "$2" 2>&1)
    rec crictl "$?" "$(printf '%s' "$out" | tail -n 1 | b64)"
  fi
  if [ -z "$had" ] && [ $rc = 0 ]; then
    listed=$(bounded containerd.list 10 ctr -n k8s.io images ls 2>/dev/null)
    digest=$(printf '%s\n' "$listed" | awk -v r="$2" '$1 == r {print $3; exit}')
    # shellcheck disable=SC2046  # the new refs are words
    bounded containerd.rm 30 ctr -n k8s.io images rm "$2" $(printf '%s\n' "$listed" \
      | awk -v d="$digest" 'd != "" && $1 ~ /^sha256:/ && $3 == d {print $1}' \
      | grep -vxF -e "${before:-@none@}") >/dev/null 2>&1
  fi
}

# containerd_pulls CERTS HOSTS_TOML REF [VIA]: the smoke test's second step on a node whose
# containerd is active: ctr pulls REF (the upstream name) through the certs dir the running
# containerd's config_path names, when that dir's hosts.toml names the registry ($endpoint: the
# node's first replica, with replicas); VIA non-empty: say which host served it
containerd_pulls() {
  certs=$1 via=$4
  rec containerd.certs "$certs"
  if grep -qF "${scheme:-http}://$endpoint" "$2" 2>/dev/null; then
    containerd_pull containerd.pull "$3"
  else
    rec containerd.pull nomirror ""
  fi
}
