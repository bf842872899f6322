# shellcheck shell=sh
# What every node script starts with (nodecfg/scripts/__init__.py puts this file first, then the
# runtimes' function files, then the script itself). POSIX sh: a node may have dash only.
#
# Values never appear in this code: they arrive as the script's arguments ("$@") or on stdin, so a
# path, an endpoint or a reason from a node is only ever data.

# messages in English (they are parsed), and the sbin dirs a login user's PATH lacks (dockerd is
# in /usr/sbin: without them docker would look "not installed")
export LC_ALL=C PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
tab='	'  # a tab character (a $(printf) was one process on every run)
nl='
'

# path_of NAME: $found, the executable NAME in $PATH as `command -v` names it, or empty; no process
# forked (a `$(command -v ...)` is one, and the facts ask for every runtime's binaries)
# shellcheck disable=SC2034  # $found is the caller's
path_of() {
  found=
  _rest=$PATH:
  while [ -n "$_rest" ]; do
    _d=${_rest%%:*}
    _rest=${_rest#*:}
    if [ -f "${_d:-.}/$1" ] && [ -x "${_d:-.}/$1" ]; then found=${_d:-.}/$1; return 0; fi
  done
  return 1
}

# version_of NAME: $version, the first line of `$found --version` (found by path_of NAME), remembered
# in $vcache (when a cache dir is given: the facts' -c) under the binary's identity. Starting a Go
# binary for its version costs 12-30 ms of CPU; the stat ~2 ms.
version_of() {
  if remembered "$1" "$found"; then return 0; fi
  version=$("$found" --version 2>/dev/null)
  version=${version%%"$nl"*}
  remember "$1"
}

# remembered NAME FILE: 0 and $version when $vcache/NAME.version holds FILE's identity — device,
# inode, size, mtime and ctime (`stat -L`): a binary replaced, upgraded or rewritten in place has
# another, and is asked again — else 1, with $_key (FILE's identity, if any) for `remember NAME`.
# Only a cache dir of this user's with mode 0700 is read or written. (A wrapper script that starts
# another binary is keyed by its own identity; what a stale version would plan is still validated
# by the real binary and verified by effect before it stays.)
remembered() {
  version=
  _key=
  _dir=
  [ -n "$vcache" ] || return 1
  _st=$(stat -L -c '%d:%i:%s:%Y:%Z %a' -- "$2" "$vcache" 2>/dev/null)
  case $_st in  # the file's line, then the cache dir's (missing when there is none yet)
    [0-9]*:*" "*"$nl"[0-9]*:*" 700") _key=${_st%%" "*}; [ -O "$vcache" ] && _dir=ok;;
    [0-9]*:*" "*) _key=${_st%%" "*};;
  esac
  [ -n "$_key" ] && [ -n "$_dir" ] && [ -f "$vcache/$1.version" ] && [ -r "$vcache/$1.version" ] \
    && read -r _k _v < "$vcache/$1.version" && [ "$_k" = "$_key" ] && [ -n "$_v" ] || return 1
  version=$_v
}

# remember NAME: $version under $_key (set by `remembered`), when there is a cache dir to keep it
remember() {
  if [ -n "$_key" ] && [ -n "$version" ]; then
    { [ -n "$_dir" ] || mkdir -m 700 -- "$vcache" 2>/dev/null; } \
      && printf '%s %s\n' "$_key" "$version" 2>/dev/null > "$vcache/$1.version.$$" \
      && mv -f -- "$vcache/$1.version.$$" "$vcache/$1.version" 2>/dev/null
  fi
  return 0
}

# unit_prop UNIT PROP: $prop, PROP of UNIT (e.g. docker.service) in $units (the facts' `systemctl
# show` output: one block of KEY=value lines per unit, blank lines between), or empty; no fork
# shellcheck disable=SC2034  # $prop is the caller's
unit_prop() {
  prop=
  _rest=$units$nl$nl
  while [ -n "$_rest" ]; do
    _blk=$nl${_rest%%"$nl$nl"*}$nl
    _rest=${_rest#*"$nl$nl"}
    case $_blk in
      *"${nl}Id=$1$nl"*)
        case $_blk in *"$nl$2="*) prop=${_blk#*"$nl$2="}; prop=${prop%%"$nl"*};; esac
        return 0;;
    esac
  done
  return 1
}

# rec TAG [FIELD...]: one tagged line, the only output format nodecfg reads (nodecfg/tagged.py):
# TAG, then each field after a tab. A field holds no tab and no newline: blobs are sent base64.
rec() {
  printf '%s' "$1"
  shift
  for _f do printf '\t%s' "$_f"; done
  printf '\n'
}

# b64: stdin as one line of base64
b64() { base64 -w0; }

# fd 3: the script's own stdout, for a record written from inside a $(...) (`bounded`'s)
exec 3>&1

# secs SECONDS: whole seconds, rounded up (`timeout` takes 7.5, shell arithmetic does not)
secs() {
  case $1 in
    *.*) echo $(( ${1%.*} + 1 ));;
    *) echo "$1";;
  esac
}

# clock: $_now, the whole seconds of this host's monotonic clock, read from /proc/uptime by the
# shell itself (no process forked: a `date` per call added up on a busy node); `date +%s` where there
# is no /proc. Every deadline in these scripts is on this clock.
clock() {
  if read -r _now _ 2>/dev/null < /proc/uptime; then _now=${_now%.*}; else _now=$(date +%s); fi
}

# The node's time budget (smoke-test's --timeout, nodecfg/deadline.py): a script given one (`-T
# SECONDS`) calls `budget SECONDS`, and $budget_end is then the second (on `clock`) by which every
# `bounded` call of the script must be over, however many there are.
budget_end=
budget() {
  clock
  case $1 in *.*) budget_end=$(( _now + ${1%.*} + 1 ));; *) budget_end=$(( _now + $1 ));; esac
}
kill_grace=2  # `timeout -k`: a call that ignores the TERM is KILLed this much later (deadline.KILL_GRACE)

# bounded TAG MAX COMMAND...: COMMAND (an executable) under coreutils `timeout -k $kill_grace S` on
# this node, so nothing of it outlives its bound: S is MAX seconds (0: no cap of its own, only the
# budget's; a script run without a budget then runs COMMAND as it is), or less when the budget ends
# sooner: then the TERM comes $kill_grace s before the budget's end and the KILL at it. Returns
# COMMAND's status, or 124 when it ran out of time (or no time was left to start it); then
# `timeout.TAG S <base64 COMMAND>` goes to fd 3 (S 0: it was not started).
bounded() {
  _tag=$1
  case $2 in *.*) _s=$(( ${2%.*} + 1 ));; *) _s=$2;; esac  # secs, without a subshell's fork
  shift 2
  if [ "$_s" -eq 0 ] && [ -z "$budget_end" ]; then "$@"; return; fi
  if [ -n "$budget_end" ]; then
    clock
    _left=$(( budget_end - _now - kill_grace ))
    if [ "$_s" -eq 0 ] || [ "$_left" -lt "$_s" ]; then _s=$_left; fi
  fi
  if [ "$_s" -le 0 ]; then
    rec "timeout.$_tag" 0 "$(printf '%s' "$*" | b64)" >&3
    return 124
  fi
  timeout -k "$kill_grace" "$_s" "$@"
  _rc=$?
  case $_rc in
    124|137) rec "timeout.$_tag" "$_s" "$(printf '%s' "$*" | b64)" >&3; return 124;;
  esac
  return "$_rc"
}

# wait_until SECONDS INTERVAL COMMAND...: run COMMAND (a function may set variables) until it
# succeeds, at most SECONDS; returns 1 when the time ran out
wait_until() {
  clock
  _end=$(( _now + $(secs "$1") ))
  _iv=$2
  shift 2
  until "$@"; do
    clock
    [ "$_now" -ge "$_end" ] && return 1
    sleep "$_iv"
  done
}

# unit_states PREFIX "PROP..." UNIT...: one `systemctl show` for the units, one line per unit:
# <PREFIX><unit without .service>, then each property's value
unit_states() {
  _prefix=$1
  _props=$2
  shift 2
  _flags=
  for _p in Id $_props; do _flags="$_flags -p $_p"; done
  # shellcheck disable=SC2086  # the flags are words
  bounded systemctl "${deadline:-10}" systemctl show "$@" $_flags 2>/dev/null | awk -v prefix="$_prefix" -v props="$_props" '
    BEGIN { RS = ""; FS = "\n"; n = split(props, want, " ") }
    { split("", v)
      for (i = 1; i <= NF; i++) { k = substr($i, 1, index($i, "=") - 1); v[k] = substr($i, index($i, "=") + 1) }
      id = v["Id"]; sub(/\.service$/, "", id); line = prefix id
      for (j = 1; j <= n; j++) line = line "\t" v[want[j]]
      print line }'
}

# settle_units SECONDS PREFIX UNIT...: wait (bounded) until systemd has no job queued for the
# units, then print <PREFIX><unit>, ActiveState, SubState, Result, Job per unit and keep the lines
# in $settled. A start that hangs (an ExecStartPre that never returns) still has its job at the
# deadline; a start that failed and waits to be retried settles as `activating auto-restart`.
settle_units() {
  clock
  _end=$(( _now + $(secs "$1") ))
  _prefix=$2
  shift 2
  while :; do
    _out=$(unit_states "$_prefix" "ActiveState SubState Result Job" "$@")
    case $_out in
      *"$tab"[0-9]*) ;;  # a Job id in the last field
      *) break;;
    esac
    clock
    [ "$_now" -ge "$_end" ] && break
    sleep 0.2
  done
  settled=$_out
  printf '%s\n' "$settled"
}

# reload_rollback UNIT RUNTIME: the rollback of a runtime whose change costs a reload (called by
# <RUNTIME>_rollback with `$job`, `$deadline`, `changed` and `down` set): a queued job is cancelled;
# if its files were restored or it went down, a running unit reloads them and a stopped one is started
reload_rollback() {
  [ -n "$job" ] && bounded systemctl "$deadline" systemctl cancel "$job" 2>/dev/null
  if changed || down; then
    if bounded systemctl "$deadline" systemctl is-active -q "$1"; then
      bounded systemctl "$deadline" systemctl --no-block reload "$1"
    else
      bounded systemctl "$deadline" systemctl reset-failed "$1" 2>/dev/null
      bounded systemctl "$deadline" systemctl --no-block start "$1"
    fi 2>&1 | tail -n 1 | while IFS= read -r line; do rec "actionlog.$2" "$line"; done
  fi
}
