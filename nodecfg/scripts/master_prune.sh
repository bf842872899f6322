# shellcheck shell=sh
# registry-prune's changes on a registry host, as -x ACTION says (nodecfg/registry/prune.py):
#   gc     the registry container stopped, distribution's garbage collector run on its storage by a
#          one-off container of the same image (its volumes and environment: --volumes-from, and
#          its Env as an --env-file in a directory only this run can read), the container started
#          again and /v2/ waited for. `registry garbage-collect` must not run while the registry
#          accepts pushes (a blob uploaded meanwhile, its manifest not yet put, would be deleted):
#          stopping it is the one way that needs no new container (read-only mode is an
#          environment variable: a recreate, twice). Without -s, `used BYTES` of its data
#          directory before and after (du).
#   stop   the container stopped (another replica collects the S3 bucket they share)
#   start  the container started again, /v2/ waited for
#   uploads  (registry-up, after a full disk) the partial uploads -u REPOSITORY UPLOAD that the
#          registry would not cancel, removed from its data directory (`_uploads/<id>` of the
#          repository: distribution's filesystem layout); `removed REPOSITORY UPLOAD` each. An
#          UPLOAD `-` asks for the repository's dead uploads (no data, empty startedat: opened on
#          the full disk), `debris REPOSITORY UPLOAD` each
# Arguments: master.sh's -D -R -P -C -n, -x ACTION, -s (S3 storage: no data directory to measure),
# -u REPOSITORY UPLOAD (repeated, uploads).
# Output: `used BYTES` (before, then after), `gc <base64 of the collector's summary line>`,
# `stopped SECONDS` (how long the registry did not serve), `http CODE`. The container is started
# again whatever the collector did; a failure goes to stderr (exit 4).

uploads=''
pruneopt() { case $1 in -u) uploads="$uploads $2|$3";; esac; }
options pruneopt "$@"

work=$(mktemp -d)  # 0700: the registry's environment (S3 keys) is written here for --env-file
trap 'rm -f "$ncfg"; rm -rf "$work"' EXIT
fail() { printf '%s\n' "$1" >&2; exit 4; }

# source: the container's data directory on this host (its /var/lib/registry mount), in $_src
source_dir() {
  mount='{{range .Mounts}}{{if eq .Destination "/var/lib/registry"}}{{.Source}}{{end}}{{end}}'
  _src=$(bounded docker 0 docker container inspect --format "$mount" "$name")
}
# used: `used BYTES` of the container's data directory (its /var/lib/registry mount)
used() {
  [ -z "$s3" ] || return 0
  source_dir
  [ -n "$_src" ] && [ -d "$_src" ] || return 0
  _k=$(bounded du 0 du -sk -- "$_src" | awk '{ print $1 }')
  case $_k in ''|*[!0-9]*) ;; *) rec used "$((_k * 1024))";; esac
}
code=''
answers() {
  code=$(rcurl -s -o /dev/null -w '%{http_code}' --max-time 2 "$reg/v2/")
  case $code in 200|401) return 0;; esac
  return 1
}
start() {
  out=$(bounded docker 0 docker start "$name" 2>&1 >/dev/null) || fail "docker start $name: $out"
  clock
  if ! wait_until "$(( budget_end - _now ))" 0.2 answers; then
    fail "the registry did not answer on /v2/ after its start within the step's ${step}s (last: $code)"
  fi
  rec http "$code"
}

case $action in
  stop)
    out=$(bounded docker 0 docker stop -t 10 "$name" 2>&1 >/dev/null) || fail "docker stop $name: $out";;
  start)
    start;;
  uploads)
    source_dir
    case $_src in /?*) ;; *) fail "no data directory of $name to remove partial uploads from";; esac
    for u in $uploads; do
      repo=${u%%|*} id=${u#*|}
      case /$repo/ in *[!a-z0-9._/-]*|*/../*|*/./*|//) continue;; esac
      ups="$_src/docker/registry/v2/repositories/$repo/_uploads"
      if [ "$id" = - ]; then
        # uploads whose opening failed on the full disk: no data and an empty (or no) startedat,
        # which the registry can never resume; an upload with either is another writer's
        for dir in "$ups"/*; do
          if [ -d "$dir" ] && [ ! -e "$dir/data" ] && [ ! -s "$dir/startedat" ]; then
            rm -rf -- "$dir" && rec debris "$repo" "${dir##*/}"
          fi
        done
        continue
      fi
      case $id in ''|*[!0-9a-f-]*) continue;; esac  # an upload id is a UUID
      dir="$ups/$id"
      if [ -d "$dir" ] && rm -rf -- "$dir"; then rec removed "$repo" "$id"; fi
    done;;
  gc)
    image=$(bounded docker 0 docker container inspect --format '{{.Image}}' "$name") || fail "no container $name"
    cfg=$(bounded docker 0 docker container inspect --format '{{range .Args}}{{println .}}{{end}}' "$name" \
      | grep -E '\.ya?ml$' | tail -n 1)
    (umask 077; bounded docker 0 docker container inspect --format '{{range .Config.Env}}{{println .}}{{end}}' \
      "$name" > "$work/env")
    used
    clock
    t0=$_now
    out=$(bounded docker 0 docker stop -t 10 "$name" 2>&1 >/dev/null) || fail "docker stop $name: $out"
    gcrc=0
    bounded docker 0 docker run --rm --volumes-from "$name" --env-file "$work/env" "$image" \
      garbage-collect "${cfg:-/etc/docker/registry/config.yml}" > "$work/gc" 2>&1 || gcrc=$?
    start
    clock
    rec stopped "$(( _now - t0 ))"
    used
    rec gc "$(grep 'blobs marked' "$work/gc" | tail -n 1 | b64)"
    if [ "$gcrc" -ne 0 ]; then
      fail "registry garbage-collect failed (exit $gcrc): $(tail -n 3 "$work/gc" | tr '\n' ' ')"
    fi;;
  *)
    fail "unknown action $action";;
esac
true
