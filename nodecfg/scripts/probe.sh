# shellcheck shell=sh
# smoke-test's probe: the registry reachable from the node, then each runtime's own probe when its
# unit is active (<RUNTIME>_probe). Raw results as tagged lines, ending with `end probe`;
# nodecfg/smoke.py diagnoses them.
#
# Arguments (nodecfg/smoke.py `probe_script`):
#   -T SECONDS                                       the node's budget left (nodecfg/deadline.py):
#                                                    every runtime call is `bounded` by it
#   -e ENDPOINT -i IMAGE_REF -h HUB_REF              what to pull (HUB_REF may be empty)
#   -u URL -H HOST -P PORT -M MANIFEST_URL           the registry's /v2/ and the image's manifest
#   -a MEDIA_TYPE                                    (repeated) accepted manifest types
#   -r RUNTIME UNIT                                  (repeated) every runtime and its unit
#   -S SCHEME                                        http (default) or https (the registry's TLS)
#   -f FIRST                                         the node's first replica (with replicas): where
#                                                    its mirror pulls go first
#   -p ENDPOINT URL HOST PORT MANIFEST_URL           (repeated) every other replica, reached as the
#                                                    registry is (`reach@<ENDPOINT>`, ...)
#   -C CAFILE                                        (repeated) where the runtimes trust its CA: the
#                                                    first one present verifies the registry
# stdin: curl's config with the registry's credentials (`user = "..."`), base64, or nothing: curl reads it
# with -K from a root-only temp file, so the password never reaches a process's argv.

endpoint='' image_ref='' hub_ref='' url='' host='' port='' manifest_url='' accepts='' runtimes='' unitnames=''
scheme=http cafiles='' first_replica='' replist=''
scan() {
  while [ $# -gt 0 ]; do
    case $1 in
      -T) budget "$2"; shift 2;;
      -e) endpoint=$2; shift 2;;
      -i) image_ref=$2; shift 2;;
      -h) hub_ref=$2; shift 2;;
      -u) url=$2; shift 2;;
      -H) host=$2; shift 2;;
      -P) port=$2; shift 2;;
      -M) manifest_url=$2; shift 2;;
      -a) accepts="$accepts $2"; shift 2;;
      -r) runtimes="$runtimes $2:$3"; unitnames="$unitnames $3.service"; shift 3;;
      -S) scheme=$2; shift 2;;
      -C) cafiles="$cafiles $2"; shift 2;;
      -f) first_replica=$2; shift 2;;
      -p) replist="$replist$2 $3 $4 $5 $6
"; shift 6;;
      *) shift;;
    esac
  done
}
scan "$@"

ncfg=$(umask 077; mktemp)
errf=$(mktemp)
trap 'rm -f "$ncfg" "$errf"' EXIT
base64 -d > "$ncfg"
exec 0</dev/null

# python3's HTTP GET, for nodes without curl and wget: prints the status code, 000 if none (and
# why on stderr); argv[2], when given, is the only CA it trusts
py_get='import ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else None
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5, context=ctx).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except Exception as exc:
    print(getattr(exc, "reason", exc), file=sys.stderr); print("000"); sys.exit(7)
'
# bash (named: dash has no /dev/tcp) speaking HTTP/1.0 itself: prints the status code
# shellcheck disable=SC2016  # expanded by that bash
bash_get='exec 3<>"/dev/tcp/$1/$2" || exit 7
printf "GET /v2/ HTTP/1.0\r\nHost: %s:%s\r\n\r\n" "$1" "$2" >&3
read -r _ code _ <&3; printf %s "$code"'

# curl's manifest HEAD, with every accepted media type
manifest_head() {
  set --
  for t in $accepts; do set -- "$@" -H "Accept: $t"; done
  tcurl -s -o /dev/null -I -w '%{http_code}' --max-time 5 -K "$ncfg" "$@" "$manifest_url"
}

# over TLS: the first CA a runtime trusts the registry with (`reach.ca <path>`, or `none`); curl
# then trusts that CA and no other
ca=''
if [ "$scheme" = https ]; then
  for f in $cafiles; do if [ -r "$f" ]; then ca=$f; break; fi; done
  rec reach.ca "${ca:-none}"
fi
# every curl bounded by the node's budget (lib.sh), 6 s at most (its own --max-time is 5)
tcurl() {
  if [ -n "$ca" ]; then bounded "reach$sfx" 6 curl --cacert "$ca" "$@"; else bounded "reach$sfx" 6 curl "$@"; fi
}
# the last line a client wrote on stderr, for the diagnosis (`reach.err <base64>`)
# (the client's error lines without wget's response headers, joined: one line, at most 400 bytes)
err_line() {
  e=$(awk '/^curl: \(/ { print; exit } NF && !/^ *HTTP\// && !/^  [A-Za-z-]*:/ && !/^--[0-9]/ && !/^Loaded CA/ &&
           !/^(Connecting to|Resolving|HTTP request sent)/ { s = s $0 " " } END { printf "%s", substr(s, 1, 400) }' "$errf")
  if [ -n "$e" ]; then rec "reach.err$sfx" "$(printf '%s' "$e" | b64)"; fi
}

# reach SUFFIX URL HOST PORT MANIFEST_URL: does the registry (SUFFIX "") or a replica (SUFFIX
# "@<endpoint>") answer HTTP from the node? With curl (credentials and the manifest too), else wget,
# else python3, else bash's /dev/tcp; a node with none of them says `none` (reported "not checked",
# never a failure). `reach<SUFFIX> <tool> <rc> <http code>`, `manifest<SUFFIX> <http code>`, ...
reach() {
  sfx=$1 url=$2 host=$3 port=$4 manifest_url=$5
  if [ "$scheme" = https ] && [ -z "$ca" ]; then
    rec "reach$sfx" noca "" ""
  elif command -v curl >/dev/null; then
    code=$(tcurl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$url" 2>"$errf")
    rc=$?
    rec "reach$sfx" curl "$rc" "$code"
    err_line
    if [ "$code" = 401 ] && [ -s "$ncfg" ]; then
      rec "reach.auth$sfx" "$(tcurl -s -o /dev/null -w '%{http_code}' --max-time 5 -K "$ncfg" "$url")"
    fi
    case $code in 000|'') ;; *) rec "manifest$sfx" "$(manifest_head)";; esac
  elif command -v wget >/dev/null; then
    set --
    if [ -n "$ca" ]; then set -- "--ca-certificate=$ca"; fi
    code=$(bounded "reach$sfx" 10 wget -S -O /dev/null -T 5 "$@" "$url" 2>"$errf"; awk '/^ *HTTP\//{c=$2} END{print c}' "$errf")
    rec "reach$sfx" wget 0 "${code:-000}"
    err_line
  elif command -v python3 >/dev/null; then
    set -- "$url"
    if [ -n "$ca" ]; then set -- "$url" "$ca"; fi
    code=$(bounded "reach$sfx" 8 python3 -c "$py_get" "$@" 2>"$errf")
    rc=$?
    rec "reach$sfx" python3 "$rc" "${code:-000}"
    err_line
  elif [ "$scheme" = https ]; then
    rec "reach$sfx" none "" ""  # bash's /dev/tcp speaks no TLS
  elif command -v bash >/dev/null; then
    code=$(bounded "reach$sfx" 5 bash -c "$bash_get" _ "$host" "$port" 2>/dev/null)
    rc=$?
    rec "reach$sfx" bash "$rc" "${code:-000}"
  else
    rec "reach$sfx" none "" ""
  fi
}

# every runtime's unit in one systemctl call: `unit.<unit> <ActiveState> <UnitFileState>`
# shellcheck disable=SC2086  # unit names are words
units=$(unit_states unit. "ActiveState UnitFileState" $unitnames)
printf '%s\n' "$units"
active() {
  printf '%s\n' "$units" | awk -F'\t' -v u="unit.$1" '$1 == u && $2 == "active" { f = 1 } END { exit !f }'
}
reach "" "$url" "$host" "$port" "$manifest_url"
# every other replica, in turn (each call bounded by the budget)
printf '%s' "$replist" | while IFS=' ' read -r r_ep r_url r_host r_port r_manifest; do
  : > "$errf"
  reach "@$r_ep" "$r_url" "$r_host" "$r_port" "$r_manifest"
done
for pair in $runtimes; do
  if active "${pair#*:}"; then "${pair%%:*}_probe"; fi
done
rec end probe
