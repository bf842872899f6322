# shellcheck shell=sh
# registry-up's facts on the master, as tagged lines (nodecfg/registry/container.py `parse_facts`):
# the docker engine, the registry image and container, who else is on the port, the repositories in
# each data directory in play and the space free under it, the tags nodecfg pushed (STATE_DIR/pushed),
# the htpasswd, registry.env and TLS files, what /v2/ answers (and with the credentials).
# Arguments: master.sh's -D -R -P -C -n -d -A -T -S -i.
#
# Docker is asked through its API on its unix socket with curl (~10 ms a call; the docker CLI
# takes ~50 ms of CPU to start), or with the CLI when there is no such socket. Either way the
# answers are docker's JSON (`docker inspect` gives a list of what the API gives as one object);
# parse_facts reads both. A docker that does not answer in time (curl's 5 s, the CLI's `bounded`)
# is said: `dockerhung`. The calls run side by side in background jobs, each into its own
# file, printed in a fixed order once all are done.

jobs=$(mktemp -d)
trap 'rm -rf "$ncfg" "$jobs"' EXIT

dsock=/var/run/docker.sock
case ${DOCKER_HOST:-} in unix://*) dsock=${DOCKER_HOST#unix://};; ?*) dsock='';; esac
{ [ -S "$dsock" ] && command -v curl >/dev/null; } || dsock=''

# dapi PATH...: docker's answers to GET each PATH, in one curl, into $jobs/api.1, api.2, ... (one
# line of JSON each; no file: no answer); without the socket the CLI's, the same JSON
if [ -n "$dsock" ]; then
  dapi() {
    _i=0
    for _p do _i=$((_i + 1)); set -- "$@" -o "$jobs/api.$_i" "http://docker$_p"; shift; done
    # curl's --max-time bounds each URL: `timeout` bounds them all
    timeout -k 1 6 curl -s --max-time 5 --unix-socket "$dsock" "$@"
    case $? in 28|124|137) : > "$jobs/hung";; esac
  }
else
  dapi() {
    _i=0
    for _p do
      _i=$((_i + 1))
      case $_p in
        /version) bounded docker 0 docker version --format '{{json .Server}}' || { [ $? -ne 124 ] || : > "$jobs/hung"; };;
        /images/*) _r=${_p#/images/}; bounded docker 0 docker image inspect "${_r%/json}" | tr -d '\n';;
        /containers/json*) bounded docker 0 docker ps -q --no-trunc --filter "publish=$port" | sed 's/.*/{"Id":"&"}/' | tr -d '\n';;
        /containers/*) _r=${_p#/containers/}; bounded docker 0 docker container inspect "${_r%/json}" | tr -d '\n';;
      esac > "$jobs/api.$_i" 2>/dev/null &
    done
    wait
  }
fi
# answer N: the Nth answer of dapi, one line ("" none)
answer() { _a=''; [ -r "$jobs/api.$1" ] && IFS= read -r _a < "$jobs/api.$1"; printf '%s' "$_a"; }

# nrepos DIR: `repos DIR N`, the repositories in a registry data directory (-1: no such directory)
nrepos() {
  d="$1/docker/registry/v2/repositories"
  if [ -d "$d" ]; then n=$(timeout 10 find "$d" -type d -name _manifests 2>/dev/null | wc -l)
  elif [ -d "$1" ]; then n=0
  else n=-1
  fi
  rec repos "$1" "$n"
  space "$1"
}

# space DIR: `space DIR BYTES`, the bytes free for root's files under DIR, or under its nearest
# existing parent when DIR does not exist yet (df -P: POSIX columns); nothing for a volume's name
space() {
  case $1 in /*) ;; *) return 0;; esac
  _p=$1
  while [ ! -e "$_p" ] && [ "$_p" != / ]; do _p=$(dirname -- "$_p"); done
  _k=$(timeout 5 df -Pk -- "$_p" 2>/dev/null | awk 'NR == 2 { print $4 }')
  case $_k in ''|*[!0-9]*) ;; *) rec space "$1" "$((_k * 1024))";; esac
}

# docker: its version, the registry image, the container by its name, and the running containers
# that publish the port (one curl); who else holds the port (each container but the named one
# inspected), and who listens on it
{
  dapi /version "/images/$image/json" "/containers/$name/json" \
    "/containers/json?filters=%7B%22publish%22%3A%5B%22$port%22%5D%7D"
  rec version "$(answer 1)"
  rec regimage "$(answer 2)"
  named=$(answer 3)
  rec container "$named"
  set --
  for h in $(answer 4 | grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4); do
    case $named in *"\"Id\":\"$h\""*|*"\"Id\": \"$h\""*) continue;; esac
    set -- "$@" "/containers/$h/json"
  done
  if [ $# -gt 0 ]; then
    rm -f "$jobs"/api.*
    n=$#
    dapi "$@"
    i=0
    while [ "$i" -lt "$n" ]; do i=$((i + 1)); rec holder "$(answer "$i")"; done
  fi
} > "$jobs/1" 2>/dev/null &
rec listen "$(timeout 5 ss -Hltnp "sport = :$port" 2>/dev/null | head -n 3 | tr '\n' ' ')" > "$jobs/3" &
nrepos "$data" > "$jobs/4" &
# whether the inventory's login works
if [ -s "$ncfg" ]; then
  rec authhttp "$(rcurl -s -o /dev/null -w '%{http_code}' --max-time 3 -K "$ncfg" "$reg/v2/")" > "$jobs/2" &
fi
if [ -d "$tlsdir" ]; then
  rec tlsfiles "$(sha256sum "$tlsdir/tls.crt" "$tlsdir/tls.key" "$tlsdir/ca.crt" 2>/dev/null \
    | cut -c1-64 | tr '\n' ' ')"
fi
command -v curl >/dev/null || rec nocurl ''
# the tags nodecfg pushed here (master_record.sh), for registry-prune
if [ -r "$statedir/pushed" ]; then awk -F '\t' 'NF == 3 { print "pushed\t" $0 }' "$statedir/pushed"; fi
if [ -r "$authdir/htpasswd" ]; then rec htpasswd "$(base64 -w0 "$authdir/htpasswd")"; fi
if [ -r "$authdir/registry.env" ]; then rec envfile "$(base64 -w0 "$authdir/registry.env")"; fi
rec http "$(rcurl -s -o /dev/null -w '%{http_code}' --max-time 3 "$reg/v2/")"
wait
cat "$jobs/1" "$jobs/2" "$jobs/3" "$jobs/4" 2>/dev/null
if [ -e "$jobs/hung" ]; then rec dockerhung ''; fi
# the repositories in each other data directory in play: the containers' (their /var/lib/registry
# mount), the inventory's counted above
sed -n 's|.*"Source": *"\([^"]*\)", *"Destination": *"/var/lib/registry".*|\1|p' "$jobs/1" \
  | awk -v data="$data" '$0 != data && !seen[$0]++' | while IFS= read -r src; do nrepos "$src"; done
true
