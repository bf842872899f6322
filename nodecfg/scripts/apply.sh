# shellcheck shell=sh
# apply: the one script that changes a node, ending with `end apply`. How a file is written (the
# contract configure.py points to):
#
# Every file's bytes are written exactly (`base64 -d`) to a temp file beside the file they replace
# (`.nodecfg.<RUN>.<I>`: this run's own name), under noclobber, with the old file's mode and owner;
# validated by its runtime; then every target is checked to be what facts saw (`cas`: sha256, or
# still absent) — if one is not, nothing is written. Each file is then renamed into place, its
# previous version kept as BAK (`<file>.nodecfg-<time>.bak`: a hard link, a copy where links fail)
# at most 0600 — its old mode or 0600, whichever is stricter: a backup may hold old credentials —
# and only the newest KEEP of nodecfg's own backups of that file are kept (older
# `<file>.nodecfg-<14 digits>.bak` removed; nothing else is touched). Reloads and restarts are
# queued (`--no-block`) and waited for, each verify bounded, every call under `bounded` (lib.sh).
#
# Arguments (nodecfg/configure.py `apply_script` builds them from the plan and the facts):
#   -t DEADLINE -e ENDPOINT [-m MIRROR]... [-p REPLICA]... [-S SCHEME]  every wait's bound, and
#                                                     what the inventory wants (read by the
#                                                     verifies): the registry's replicas in this
#                                                     node's order (none without replicas); SCHEME
#                                                     `http` (the default) or `https` (its TLS)
#   -R RUN -K KEEP                                    this run's id (its temp files' names), and how
#                                                     many backups per file to keep (at least 1)
#   -F PATH REAL MODE OWNER VALIDATE RUNTIME OLD BAK  a file to write, in order: REAL is the file the
#        write replaces (a symlink's target: the link is kept), MODE octal, OWNER uid:gid or -
#        (a new file), VALIDATE the runtime's validator key, OLD the sha256 facts saw or `absent`,
#        BAK its backup or -
#   -A RUNTIME UNIT ACTION                            highest layer first: `reload`/`restart` the unit
#        (queued, waited for, then <RUNTIME>_verify once it settled active), or `none` (files it
#        reads per command: <RUNTIME>_verify only)
#   -U UNIT                                           every unit, for the closing state probe
#   configure-nodes --undo (nodecfg/undo.py):
#   -X                                                undo: each verify waits for what must be gone
#   -g RUNTIME WORD                                   what must no longer show in RUNTIME's verify
#                                                     (`$gone` there, words)
#   -F ... with MODE `rm`                             the file is removed (backed up, as any write)
#   -P REAL                                           at the end: every backup of nodecfg's of REAL goes
#   -Q DIR                                            then: DIR is removed if it is empty
# stdin: each file's content, base64, one line per -F in order (an empty line for a removal).

deadline=10 endpoint='' mirrors='' replicas='' scheme=http units='' run=0 keep=3 undo=0 gones=''
scan() {
  while [ $# -gt 0 ]; do
    case $1 in
      -t) deadline=$2; shift 2;;
      -R) run=$2; shift 2;;
      -K) keep=$2; shift 2;;
      -e) endpoint=$2; shift 2;;
      -m) mirrors="$mirrors $2"; shift 2;;
      -p) replicas="$replicas $2"; shift 2;;
      -S) scheme=$2; shift 2;;
      -U) units="$units $2"; shift 2;;
      -X) undo=1; shift;;
      -g) gones="$gones$2$tab$3
"; shift 3;;
      -P|-Q) shift 2;;
      -F) shift 9;;
      -A) shift 4;;
      *) shift;;
    esac
  done
}
scan "$@"
dump=  # containerd's config dump from its validation, reused by its verify

# the contents come on fd 5; every command here reads /dev/null, never them
exec 5<&0 0</dev/null
umask 022
bad=0

fail() { rec invalid "$1" "$(printf '%s\n' "$2" | grep -v '^$' | tail -n 1)"; bad=1; }

# compare-and-swap: PATH is still what facts saw (OLD: its sha256, or `absent`), else nothing is
# written. REAL is the file a write replaces (a symlink's target, else PATH).
cas() {
  if [ "$3" = absent ]; then
    if [ -e "$1" ] || [ -L "$1" ]; then
      rec conflict "$1" 'created on the node since its facts were read'; return 1; fi
    return 0
  fi
  if [ "$1" = "$2" ]; then
    if [ -L "$1" ]; then
      rec conflict "$1" 'replaced by a symlink since its facts were read'; return 1; fi
  elif [ "$(readlink -f -- "$1")" != "$2" ]; then
    rec conflict "$1" 'its symlink was changed since its facts were read'; return 1
  fi
  s=$(sha256sum < "$2" 2>/dev/null) || s=
  [ "${s%% *}" = "$3" ] && return 0
  rec conflict "$1" 'changed on the node since its facts were read'; return 1
}

# temp I REAL: sets $t, this run's temp file beside REAL (absolute) for the I-th file (the rollback
# removes the same, and no other)
temp() { t="${2%/*}/.nodecfg.$run.$1"; }

write_all() {
  i=0
  while [ $# -gt 0 ]; do
    if [ "$1" != -F ]; then shift; continue; fi
    path=$2 real=$3 mode=$4 owner=$5 validate=$6 rt=$7
    shift 9
    IFS= read -r data <&5 || data=
    temp "$i" "$real"
    dir=${real%/*}
    dir=${dir:-/}
    i=$((i + 1))
    [ "$mode" = rm ] && continue  # a removal: nothing to write
    [ -d "$dir" ] || err=$(mkdir -p -- "$dir" 2>&1) || { fail "$path" "$err"; continue; }
    _m=$(( 0777 & ~0$mode ))
    umask "$(( _m / 64 ))$(( _m / 8 % 8 ))$(( _m % 8 ))"  # octal digits by arithmetic: no printf forked
    # shellcheck disable=SC3040  # noclobber: never write through a file someone put there
    set -C
    if err=$(printf '%s' "$data" | base64 -d 2>&1 > "$t"); then
      if [ "$owner" != - ]; then
        err=$(chown "$owner" "$t" 2>&1 && chmod "$mode" "$t" 2>&1) || fail "$path" "$err"
      fi
    else
      fail "$path" "$err"
    fi
    set +C
    umask 022
    "${rt}_validate" "$validate" "$t" "$path"
  done
}

remove_temps() {
  i=0
  while [ $# -gt 0 ]; do
    if [ "$1" != -F ]; then shift; continue; fi
    temp "$i" "$3"
    rm -f -- "$t"
    i=$((i + 1))
    shift 9
  done
}

cas_all() {
  while [ $# -gt 0 ]; do
    if [ "$1" != -F ]; then shift; continue; fi
    cas "$2" "$3" "$8" || bad=1
    shift 9
  done
}

rename_all() {
  i=0
  while [ $# -gt 0 ]; do
    if [ "$1" != -F ]; then shift; continue; fi
    path=$2 real=$3 mode=$4 bak=$9
    temp "$i" "$real"
    i=$((i + 1))
    shift 9
    if [ "$bak" != - ]; then
      { ln -f -- "$real" "$bak" 2>/dev/null || cp -p -- "$real" "$bak"; } && rec backup "$path" "$bak"
    fi
    if [ "$mode" = rm ]; then
      if rm -f -- "$real"; then rec wrote "$path"; fi
    elif mv -f -- "$t" "$real"; then
      rec wrote "$path"
      # the backup is the old file's own inode no more: at most 0600 now, and the oldest go
      if [ "$bak" != - ]; then keep_backups "$real"; fi
    fi
  done
}

# own_backup REAL FILE: FILE is one of nodecfg's backups of REAL (`REAL.nodecfg-<14 digits>.bak`, a
# regular file, not a symlink)
own_backup() {
  case ${2#"$1".nodecfg-} in
    [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].bak) ;;
    *) return 1;;
  esac
  [ -f "$2" ] && [ ! -L "$2" ]
}

# keep_backups REAL, right after REAL was renamed into place (a fresh inode: no backup is it): the
# newest $keep of nodecfg's backups of REAL kept, each at most 0600 (its old mode or 0600, whichever
# is stricter); the older ones removed (`pruned <file>`). The stamps sort in the order they were
# made, as the glob lists them (LC_ALL=C).
keep_backups() {
  _real=$1
  _n=0
  for _b in "$_real".nodecfg-*.bak; do own_backup "$_real" "$_b" && _n=$((_n + 1)); done
  set --
  for _b in "$_real".nodecfg-*.bak; do
    own_backup "$_real" "$_b" || continue
    if [ "$_n" -gt "$keep" ]; then
      rm -f -- "$_b" && rec pruned "$_b"
    else
      set -- "$@" "$_b"
    fi
    _n=$((_n - 1))
  done
  if [ $# -gt 0 ]; then chmod u-x,go= -- "$@"; fi
}

# highest layer first: docker's reload needs nothing from containerd, but systemd queues a docker
# job behind a pending containerd job (docker is ordered After= it), so a containerd start that
# hangs would hold docker's reload too. Each runtime: queue, wait (bounded), verify (bounded).
act_all() {
  while [ $# -gt 0 ]; do
    if [ "$1" != -A ]; then shift; continue; fi
    rt=$2 unit=$3 action=$4
    shift 4
    gone=$(printf '%s' "$gones" | awk -F "$tab" -v r="$rt" '$1 == r {print $2}')
    if [ "$action" = none ]; then
      "${rt}_verify"
      continue
    fi
    bounded systemctl "$deadline" systemctl --no-block "$action" "$unit.service" 2>&1 | tail -n 1 \
      | while IFS= read -r line; do rec "actionlog.$rt" "$line"; done
    settle_units "$deadline" settled. "$unit.service"
    case $settled in *"settled.$unit${tab}active$tab"*) "${rt}_verify";; esac
  done
}

# --undo, at the end: nodecfg's backups of the files it undid (-P), then the dirs left empty (-Q)
purge_all() {
  while [ $# -gt 0 ]; do
    case $1 in
      -P) for _b in "$2".nodecfg-*.bak; do own_backup "$2" "$_b" && rm -f -- "$_b" && rec pruned "$_b"; done
          shift 2;;
      -Q) rmdir -- "$2" 2>/dev/null; shift 2;;
      *) shift;;
    esac
  done
}

write_all "$@"
if [ $bad = 1 ]; then remove_temps "$@"; rec end apply; exit 0; fi
cas_all "$@"
if [ $bad = 1 ]; then remove_temps "$@"; rec end apply; exit 0; fi
rename_all "$@"
act_all "$@"
purge_all "$@"
# shellcheck disable=SC2086  # unit names are words
unit_states after. "ActiveState ActiveEnterTimestampMonotonic" $units
rec end apply
