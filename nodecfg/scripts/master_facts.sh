# shellcheck shell=sh
# registry-up's facts on the master, as tagged lines (nodecfg/registry.py `parse_facts`): the
# docker engine, the registry image and container, who else is on the port, the repositories in
# each data directory in play, the htpasswd and TLS files, what /v2/ answers (and with the
# credentials), the manifests asked for. Arguments: master.sh's -R -P -C -n -d -A -T -i, and -p,
# -a, -m. The docker CLI calls (~60 ms each) run side by side in background jobs, each into its own
# file, printed in a fixed order once all are done.

jobs=$(mktemp -d)
trap 'rm -rf "$ncfg" "$jobs"' EXIT

# nrepos DIR: `repos DIR N`, the repositories in a registry data directory (-1: no such directory)
nrepos() {
  d="$1/docker/registry/v2/repositories"
  if [ -d "$d" ]; then n=$(timeout 10 find "$d" -type d -name _manifests 2>/dev/null | wc -l)
  elif [ -d "$1" ]; then n=0
  else n=-1
  fi
  rec repos "$1" "$n"
}

# who else is on the port (running containers publishing it, else a listening process), the
# repositories in each data directory in play, and whether the inventory's login works
{
  holders=$(docker ps -q --filter "publish=$port" 2>/dev/null)
  for h in $holders; do rec holder "$(docker container inspect "$h" | tr -d '\n')"; done
  rec listen "$(timeout 5 ss -Hltnp "sport = :$port" 2>/dev/null | head -n 3 | tr '\n' ' ')"
  # shellcheck disable=SC2086  # the holders' ids are words
  docker container inspect \
    --format '{{range .Mounts}}{{if eq .Destination "/var/lib/registry"}}{{.Source}}{{end}}{{end}}' \
    "$name" $holders 2>/dev/null | while IFS= read -r src; do [ -n "$src" ] && nrepos "$src"; done
  nrepos "$data"
  if [ -s "$ncfg" ]; then
    rec authhttp "$(rcurl -s -o /dev/null -w '%{http_code}' --max-time 3 -K "$ncfg" "$reg/v2/")"
  fi
} > "$jobs/1" 2>/dev/null &
{
  v=$(docker version --format '{{.Server.Version}} {{.Server.Os}}/{{.Server.Arch}}' 2>/dev/null)
  rec docker "${v% *}"
  rec platform "${v##* }"
} > "$jobs/2" &
rec regimage "$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null)" > "$jobs/3" &
rec container "$(docker container inspect "$name" 2>/dev/null | tr -d '\n')" > "$jobs/4" &
if [ -n "$ids" ]; then
  # shellcheck disable=SC2086  # image ids are words
  docker image inspect --format "present$tab{{.Id}}" $ids > "$jobs/5" 2>/dev/null &
fi
if [ -d "$tlsdir" ]; then
  rec tlsfiles "$(sha256sum "$tlsdir/tls.crt" "$tlsdir/tls.key" "$tlsdir/ca.crt" 2>/dev/null \
    | cut -c1-64 | tr '\n' ' ')"
fi
command -v curl >/dev/null || rec nocurl ''
if [ -r "$authdir/htpasswd" ]; then rec htpasswd "$(base64 -w0 "$authdir/htpasswd")"; fi
rec http "$(rcurl -s -o /dev/null -w '%{http_code}' --max-time 3 "$reg/v2/")"
options manifest_of "$@"
wait
cat "$jobs"/*
true
