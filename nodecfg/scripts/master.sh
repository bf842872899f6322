# shellcheck shell=sh
# What the master's scripts share (nodecfg/registry/container.py puts this file after lib.sh, before
# master_facts.sh, master_apply.sh, master_down.sh, master_copy.sh, master_record.sh or
# master_prune.sh): their arguments, the curl credentials from stdin, and `rcurl`/`$reg` (the
# registry as seen from the master). The step's deadline is lib.sh's `budget`: every docker call
# goes through lib.sh's `bounded`.
#
# Arguments (nodecfg/registry/container.py `_access_args`, `_place_args` and each script's builder),
# options up to `--`:
#   -D SECONDS      this step's budget: every docker call runs under `timeout` for what is left of
#                   it, killed on the master itself when it runs out (lib.sh `bounded TAG 0 ...`)
#   -R URL          the registry's base URL from the master: http://127.0.0.1:PORT, or over TLS
#                   https://<endpoint> (its own name: the master checks the certificate nodes see)
#   -P PORT         the port it is published on
#   -C CAFILE       TLS: the CA to verify it with; curl connects to 127.0.0.1:PORT
#   -n NAME         the registry container's name
#   -d DATA_DIR     its data directory (or a docker volume's name) as the inventory says
#   -A AUTH_DIR     where its htpasswd is;  -T TLS_DIR: where its tls.crt, tls.key and ca.crt are
#   -S STATE_DIR    what nodecfg records on the master (`data-dirs`: the data directories of the
#                   registries it created, one per line; `pushed`: the tags it pushed, master_record.sh)
#   -i IMAGE        the registry image (facts)
#   -x ACTION       create | recreate | start | restart (apply)
#   -w              apply: an htpasswd to write comes on stdin;  -t: TLS files come on stdin;
#                   -e: the registry's secret environment (S3 keys, http.secret: registry.env)
#   -l LABEL        (repeated) down: a label that marks a container as nodecfg's
#   -p              down: purge the data directory too;  -s: down: the registry serves an S3 bucket
#   -F URL          copy: the registry the blobs come from;  -b REPOSITORY DIGEST (repeated): a blob
#   -r REPO TAG DIGEST  record (repeated): a tag nodecfg pushed (DIGEST `-`: forget it)
#   -u REPOSITORY UPLOAD  prune -x uploads (repeated): a partial upload to remove
# stdin: one line of base64 per secret, in this order: curl's config (`user = "..."`, or an empty
# line: no credentials), then with -w the htpasswd file, with -t tls.crt, tls.key and ca.crt, with
# -e registry.env.
# curl reads its config with -K from a root-only temp file ($ncfg): the password never reaches a
# process's argv, and no secret is ever in this code.

reg='' port='' cafile='' name='' data='' authdir='' tlsdir='' statedir='' image='' action='' htpw='' tls='' envf=''
step=60 labels='' purge='' s3=''

# options FN ARG...: FN OPTION [VALUE...] for each option of the arguments, up to `--`; $optwords: how
# many words they are (a value may itself be `--`: only an option's place ends them)
options() {
  _fn=$1
  shift
  _all=$#
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    case $1 in
      -w|-t|-e|-p|-s) "$_fn" "$1"; shift;;
      -b|-u) "$_fn" "$1" "$2" "$3"; shift 3;;
      -r) "$_fn" "$1" "$2" "$3" "$4"; shift 4;;
      *) "$_fn" "$1" "$2"; shift 2;;
    esac
  done
  # shellcheck disable=SC2034  # read by master_apply.sh
  optwords=$((_all - $#))
}

# shellcheck disable=SC2034  # each master script reads the options it needs
setopt() {
  case $1 in
    -D) step=$2;;
    -R) reg=$2;;
    -P) port=$2;;
    -C) cafile=$2;;
    -n) name=$2;;
    -d) data=$2;;
    -A) authdir=$2;;
    -T) tlsdir=$2;;
    -S) statedir=$2;;
    -i) image=$2;;
    -x) action=$2;;
    -w) htpw=1;;
    -t) tls=1;;
    -e) envf=1;;
    -l) labels="$labels $2";;
    -p) purge=1;;
    -s) s3=1;;
  esac
}
options setopt "$@"
budget "$step"

# the secrets, read before anything else runs: curl's config into $ncfg, the others (base64) into
# $pw64, $crt64, $key64, $ca64, $env64; nothing after this reads stdin
ncfg=$(umask 077; mktemp)
trap 'rm -f "$ncfg"' EXIT
IFS= read -r _line
printf '%s' "$_line" | base64 -d > "$ncfg"
_line='' pw64='' crt64='' key64='' ca64='' env64=''
# shellcheck disable=SC2034  # read by master_apply.sh
{
  if [ -n "$htpw" ]; then IFS= read -r pw64; fi
  if [ -n "$tls" ]; then IFS= read -r crt64; IFS= read -r key64; IFS= read -r ca64; fi
  if [ -n "$envf" ]; then IFS= read -r env64; fi
}
exec 0</dev/null

# rcurl ARG...: curl with what reaching the registry takes (over TLS: its CA, and 127.0.0.1)
rcurl() {
  if [ -n "$cafile" ]; then
    curl --cacert "$cafile" --connect-to "::127.0.0.1:$port" "$@"
  else
    curl "$@"
  fi
}
