# shellcheck shell=sh
# docker's functions for the node scripts (nodecfg/runtimes/docker.py): facts, validate, verify,
# rollback, and the smoke probe. They read the scripts' globals: $deadline, $endpoint, $mirrors,
# $replicas (the registry's replicas in this node's order, or empty), $scheme (configure),
# $image_ref, $hub_ref, $first_replica (the node's first replica, or empty) (smoke).

# `docker info` as JSON: straight from the socket with curl where it can (the docker CLI costs
# ~20 ms of CPU per call, which adds up on a busy node), else through the CLI; each at most 5 s.
# 124: dockerd did not answer (a `timeout.docker.info` record says which call)
dinfo() {
  bounded docker.info 5 curl -sf --unix-socket /var/run/docker.sock http://docker/info 2>/dev/null
  case $? in
    0) return 0;;
    124) return 124;;
  esac
  bounded docker.info 5 docker info --format '{{json .}}' 2>/dev/null
}

docker_facts() {
  path_of dockerd
  rec bin.docker "$found"
  [ -n "$found" ] || return 0  # not installed: nothing more to ask
  # the running dockerd's version: remembered under the identity of the image it runs
  # (/proc/<pid>/exe: a restart on an upgraded binary is another), else asked of it — it names it in
  # the Server header of every answer, and its /_ping costs it nothing (/version runs `runc
  # --version` and docker-init's on every call: ~15 ms of CPU) — cut by the shell, no pipeline
  unit_prop docker.service MainPID
  pid=$prop
  if [ "${pid:-0}" -gt 0 ] 2>/dev/null && remembered dockerd.running "/proc/$pid/exe"; then
    rec version.docker "Docker version $version"
  else
    dv=$(curl -s -o /dev/null -D - --max-time 2 --unix-socket /var/run/docker.sock http://docker/_ping 2>/dev/null)
    case $dv in
      *"Server: Docker/"*) dv=${dv#*Server: Docker/}; dv=${dv%%" "*};;  # `Docker/<version> (<os>)`
      *) dv=;;
    esac
    case $dv in *[!0-9A-Za-z.+~_-]*) dv=;; esac  # anything else is no version
    if [ -n "$dv" ]; then
      rec version.docker "Docker version $dv"
      version=$dv
      [ "${pid:-0}" -gt 0 ] 2>/dev/null && remember dockerd.running
    else  # the binary alone (no daemon to wait for; starting it costs ~40 ms of CPU)
      version_of dockerd
      rec version.docker "$version"
    fi
  fi
  if [ "${pid:-0}" -gt 0 ] 2>/dev/null; then
    printf 'cmdline.docker\t'
    b64 < "/proc/$pid/cmdline" 2>/dev/null
    printf '\n'
  fi
}

# docker_validate KIND TEMP PATH: `dockerd --validate` (docker 23+) reads the new daemon.json
docker_validate() {
  [ "$1" = dockerd ] || return 0
  out=$(bounded docker.validate "$deadline" dockerd --validate --config-file "$2" 2>&1 >/dev/null)
  case $? in
    0) ;;
    124) fail "$3" "dockerd --validate gave no answer within ${deadline}s";;
    *) fail "$3" "$out";;
  esac
}

# the running dockerd lists the registry and each replica (as insecure: plain HTTP; over TLS they
# are not listed), and the mirrors (<scheme>://<replica>/, else <scheme>://<endpoint>/) when
# docker.io is mirrored. Endpoints are words; an IPv6 one's brackets must not glob (set -f).
docker_listed() {
  info=$(dinfo)
  [ -n "$info" ] || return 1
  set -f
  _ok=0
  if [ "$scheme" = http ]; then
    for _r in $endpoint $replicas; do case $info in *"$_r"*) ;; *) _ok=1;; esac; done
  fi
  case " $mirrors " in *" docker.io "*)
    for _r in ${replicas:-$endpoint}; do case $info in *"$scheme://$_r/"*) ;; *) _ok=1;; esac; done;;
  esac
  set +f
  return $_ok
}

# --undo: dockerd answers and its info names none of $gone (words, as `docker info` writes them)
docker_unlisted() {
  info=$(dinfo)
  [ -n "$info" ] || return 1
  set -f
  for _w in $gone; do case $info in *"$_w"*) set +f; return 1;; esac; done
  set +f
}

# poll `docker info` (bounded) until the registry is listed (--undo: until what went is gone):
# dockerd applies SIGHUP asynchronously
docker_verify() {
  if [ "${undo:-0}" = 1 ]; then wait_until "$deadline" 0.25 docker_unlisted
  else wait_until "$deadline" 0.25 docker_listed; fi
  rec docker.info "$info"
}

# a queued job is cancelled; a running dockerd reloads its restored file, a stopped one is started
docker_rollback() { reload_rollback docker.service docker; }

# docker's image API straight from the socket where curl can (the CLI costs ~20 ms a call).
# dhas: 0 the node has the image, 1 it has not, other: unknown (taken as "has": never removed)
if command -v curl >/dev/null 2>&1 && [ -S /var/run/docker.sock ]; then
  dhas() { _code=$(bounded docker.has 10 curl -s -o /dev/null -w '%{http_code}' \
                     --unix-socket /var/run/docker.sock "http://docker/images/$1/json") || return 2
           [ "$_code" = 200 ]; }
  drm() { for r in "$@"; do bounded docker.rmi 30 curl -s -o /dev/null -X DELETE \
            --unix-socket /var/run/docker.sock "http://docker/images/$r"; done; }
else
  dhas() { bounded docker.has 10 docker image inspect "$1" >/dev/null 2>&1; }
  drm() { bounded docker.rmi 30 docker rmi "$@" >/dev/null 2>&1; }
fi

# docker_pull TAG REF: `TAG rc base64(last line)` (rc 124: out of time); an image the node did not
# have is removed at the end (with the others): the mirror pull then reuses the layers and only has
# to resolve the manifest through the mirror, which is what it proves
docker_pull() {
  had=$(dhas "$2"; [ $? != 1 ] && echo yes)
  out=$(bounded "$1" 0 docker pull -q "$2" 2>&1)
  rc=$?
  rec "$1" "$rc" "$(printf '%s' "$out" | tail -n 1 | b64)"
  if [ -z "$had" ] && [ $rc = 0 ]; then drop="$drop $2"; fi
}

docker_probe() {
  drop=
  info=$(dinfo)
  rc=$?
  rec docker.info "$(printf '%s' "$info" | b64)"
  [ $rc = 124 ] && return 0  # dockerd does not answer: no pull would either
  docker_pull docker.pull "$image_ref"
  if [ -n "$hub_ref" ]; then
    case $info in
      *"${scheme:-http}://${first_replica:-$endpoint}"*) docker_pull docker.mirror "$hub_ref";;
      *) rec docker.mirror nomirror "";;
    esac
  fi
  # shellcheck disable=SC2086  # image refs are words
  if [ -n "$drop" ]; then drm $drop; fi
}
