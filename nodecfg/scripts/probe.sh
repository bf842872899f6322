# shellcheck shell=sh
# smoke-test's probe: the registry reachable from the node, then each runtime's own probe when its
# unit is active (<RUNTIME>_probe). Raw results as tagged lines; nodecfg/smoke.py diagnoses them.
#
# Arguments (nodecfg/smoke.py `probe_script`):
#   -e ENDPOINT -i IMAGE_REF -h HUB_REF              what to pull (HUB_REF may be empty)
#   -u URL -H HOST -P PORT -M MANIFEST_URL           the registry's /v2/ and the image's manifest
#   -a MEDIA_TYPE                                    (repeated) accepted manifest types
#   -r RUNTIME UNIT                                  (repeated) every runtime and its unit
# stdin: curl's config with the registry's credentials (`user = "..."`), base64, or nothing: curl reads it
# with -K from a root-only temp file, so the password never reaches a process's argv.

endpoint='' image_ref='' hub_ref='' url='' host='' port='' manifest_url='' accepts='' runtimes='' unitnames=''
scan() {
  while [ $# -gt 0 ]; do
    case $1 in
      -e) endpoint=$2; shift 2;;
      -i) image_ref=$2; shift 2;;
      -h) hub_ref=$2; shift 2;;
      -u) url=$2; shift 2;;
      -H) host=$2; shift 2;;
      -P) port=$2; shift 2;;
      -M) manifest_url=$2; shift 2;;
      -a) accepts="$accepts $2"; shift 2;;
      -r) runtimes="$runtimes $2:$3"; unitnames="$unitnames $3.service"; shift 3;;
      *) shift;;
    esac
  done
}
scan "$@"

ncfg=$(umask 077; mktemp)
trap 'rm -f "$ncfg"' EXIT
base64 -d > "$ncfg"
exec 0</dev/null

# python3's HTTP GET, for nodes without curl and wget: prints the status code, 000 if none
py_get='import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except Exception:
    print("000"); sys.exit(7)
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
  curl -s -o /dev/null -I -w '%{http_code}' --max-time 5 -K "$ncfg" "$@" "$manifest_url"
}

# does the registry answer HTTP from the node? With curl (credentials and the manifest too), else
# wget, else python3, else bash's /dev/tcp; a node with none of them says `none` (reported "not
# checked", never a failure). `reach <tool> <rc> <http code>`.
reach() {
  if command -v curl >/dev/null; then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url")
    rc=$?
    rec reach curl "$rc" "$code"
    if [ "$code" = 401 ] && [ -s "$ncfg" ]; then
      rec reach.auth "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -K "$ncfg" "$url")"
    fi
    rec manifest "$(manifest_head)"
  elif command -v wget >/dev/null; then
    code=$(wget -q -S -O /dev/null -T 5 "$url" 2>&1 | awk '/HTTP\//{c=$2} END{print c}')
    rec reach wget 0 "${code:-000}"
  elif command -v python3 >/dev/null; then
    code=$(timeout 8 python3 -c "$py_get" "$url")
    rc=$?
    rec reach python3 "$rc" "${code:-000}"
  elif command -v bash >/dev/null; then
    code=$(timeout 5 bash -c "$bash_get" _ "$host" "$port" 2>/dev/null)
    rc=$?
    rec reach bash "$rc" "${code:-000}"
  else
    rec reach none "" ""
  fi
}

# every runtime's unit in one systemctl call: `unit.<unit> <ActiveState> <UnitFileState>`
# shellcheck disable=SC2086  # unit names are words
units=$(unit_states unit. "ActiveState UnitFileState" $unitnames)
printf '%s\n' "$units"
active() {
  printf '%s\n' "$units" | awk -F'\t' -v u="unit.$1" '$1 == u && $2 == "active" { f = 1 } END { exit !f }'
}
reach
for pair in $runtimes; do
  if active "${pair#*:}"; then "${pair%%:*}_probe"; fi
done
true
