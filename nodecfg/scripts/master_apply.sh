# shellcheck shell=sh
# registry-up's change on the master: (re)start the registry container as -x ACTION says, wait for
# /v2/ (until the step's deadline), then report `http CODE` and `container INSPECT`.
# Arguments: master.sh's -D -R -P -C -n -d -A -T -S -x -w -t -e, then `--` and `docker run`'s
# arguments after `run` (create, recreate). stdin (master.sh): curl's config, with -w the
# htpasswd, with -t tls.crt, tls.key and ca.crt, with -e registry.env.
#
# Nothing is left behind when docker refuses: a container `docker run` created but could not
# start is removed (by the id in its --cidfile, in a directory only this run can write, never by
# name), the container a recreate replaces is renamed aside and put back, and a data directory or
# htpasswd or registry.env this run made is removed again (a previous one restored). docker's whole message
# goes to stderr. A container created here has its data directory recorded in STATE_DIR/data-dirs
# (what registry-down --purge may delete).

old="$name-nodecfg-old"
pw="$authdir/htpasswd" envfile="$authdir/registry.env"
work=$(mktemp -d)  # 0700: the cidfile inside cannot be planted (docker run refuses one that exists)
cidf="$work/cid"
trap 'rm -f "$ncfg" "$pw.tmp" "$envfile.tmp"; rm -rf "$work"' EXIT
hung="docker did not answer within ${step}s (is dockerd hung?)"
fail() { printf '%s\n' "${1:-$hung}" >&2; exit "${2:-4}"; }
madedir='' hadpw='' hadenv=''
case $data in /*) absdata=1;; *) absdata='';; esac  # else a volume's name (docker's to make), or none (S3)

# secret FILE BASE64: FILE (0600) written atomically from the base64 data; the one it replaces is
# kept as FILE.bak until the container runs (`undo` puts it back)
secret() {
  if [ -e "$1" ]; then cp -p "$1" "$1.bak"; fi
  (umask 077; printf '%s' "$2" | base64 -d > "$1.tmp")
  mv -f "$1.tmp" "$1"
}
# unsecret FILE HAD: FILE as before this run: its backup back, or gone if there was none
unsecret() { if [ -n "$2" ]; then mv -f "$1.bak" "$1"; else rm -f "$1"; fi; }

# undo: what this run made before docker refused (the secret files it wrote, the data dir it made)
undo() {
  if [ -n "$htpw" ]; then unsecret "$pw" "$hadpw"; fi
  if [ -n "$envf" ]; then unsecret "$envfile" "$hadenv"; fi
  if [ -n "$absdata" ]; then [ -n "$madedir" ] && rmdir "$data" 2>/dev/null; fi
  :
}

# run_container ARG...: docker run with the arguments after `--`, its id into $cidf
run_container() {
  shift "$optwords"
  shift
  bounded docker 0 docker run --cidfile "$cidf" "$@"
}
# tlsfile NAME MODE BASE64: TLS_DIR/NAME written atomically (a temp file, then mv)
tlsfile() {
  (umask 077; printf '%s' "$3" | base64 -d > "$tlsdir/.$1.tmp")
  chmod "$2" "$tlsdir/.$1.tmp"
  mv -f "$tlsdir/.$1.tmp" "$tlsdir/$1"
}
drop_created() { [ -s "$cidf" ] && bounded docker 0 docker rm -f "$(cat "$cidf")" >/dev/null 2>&1; }
# record: the data directory of the container just created, once, in STATE_DIR/data-dirs (root only)
record() {
  [ -n "$data" ] || return 0  # S3 storage: no data directory
  install -d -m 700 "$statedir"
  grep -qxF -- "$data" "$statedir/data-dirs" 2>/dev/null || printf '%s\n' "$data" >> "$statedir/data-dirs"
}

if [ -n "$absdata" ]; then
  [ -d "$data" ] || madedir=1
  out=$(install -d -m 755 "$data" 2>&1) || fail "$out"
fi
if [ -n "$htpw" ] || [ -n "$envf" ]; then install -d -m 700 "$authdir"; fi
if [ -n "$htpw" ]; then [ -e "$pw" ] && hadpw=1; secret "$pw" "$pw64"; fi
if [ -n "$envf" ]; then [ -e "$envfile" ] && hadenv=1; secret "$envfile" "$env64"; fi
pw64='' env64=''
if [ -n "$tls" ]; then  # a renewed or first certificate: valid either way, so no undo
  install -d -m 700 "$tlsdir"
  tlsfile tls.crt 644 "$crt64"
  tlsfile tls.key 600 "$key64"
  tlsfile ca.crt 644 "$ca64"
fi
crt64='' key64='' ca64=''

case $action in
  recreate)
    was=$(bounded docker 0 docker container inspect --format '{{.State.Running}}' "$name" 2>/dev/null)
    out=$(bounded docker 0 docker stop -t 10 "$name" 2>&1 >/dev/null && bounded docker 0 docker rename "$name" "$old" 2>&1) \
      || { undo; fail "$out"; }
    if out=$(run_container "$@" 2>&1); then bounded docker 0 docker rm -f "$old" >/dev/null; record
    else
      drop_created
      bounded docker 0 docker rename "$old" "$name"
      [ "$was" = true ] && bounded docker 0 docker start "$name" >/dev/null
      undo
      fail "$out"
    fi;;
  create)
    if out=$(run_container "$@" 2>&1); then record; else drop_created; undo; fail "$out"; fi;;
  start|restart)
    out=$(bounded docker 0 docker "$action" "$name" 2>&1) || { undo; fail "$out"; };;
esac
rm -f "$pw.bak" "$envfile.bak"
code=''
up() {
  code=$(rcurl -s -o /dev/null -w '%{http_code}' --max-time 2 "$reg/v2/")
  case $code in 200|401) return 0;; esac
  return 1
}
clock
if ! wait_until "$(( budget_end - _now ))" 0.2 up; then
  echo "registry did not answer on /v2/ within the step's ${step}s (last: $code)" >&2
  bounded docker 0 docker logs --tail 5 "$name" >&2
  exit 3
fi
rec http "$code"
rec container "$(bounded docker 0 docker container inspect "$name" | tr -d '\n')"
true
