# shellcheck shell=sh
# facts: everything the planners need from a node, as tagged lines, ending with `end nodecfg-facts`
# (output without it is incomplete, and an incomplete answer fails the node).
#
# Arguments, in any order:
#   -t DEADLINE    seconds each command here may take (systemctl, the runtimes' --version)
#   -c DIR         where the runtimes' binaries' versions are remembered (lib.sh `version_of`)
#   -u UNIT        a unit to describe (`unit.<name> <prop>=<value>` lines), every runtime's
#   -r RUNTIME     a runtime whose <RUNTIME>_facts function runs (after the units, with $units set)
#   -f PATH        a config file to read
#   -d DIR GLOB    a dir to list, and the files matching GLOB in it to read
#
# Each file is `path <path> file <real path> <mode uid gid size>`, `path <path> absent` or
# `path <path> unreadable <why>`; a dir `dir <dir> listed` (its files follow), `absent` or
# `unreadable`. The bytes of the readable files come in one tar archive (two processes, whatever
# the number of files), then tar's exit code. A stat error other than "No such file" (EACCES on
# /root for a login user) is *unreadable*, never absent.

# gone PATH: PATH, which `-e` and `-L` say is not there, is absent for certain — its nearest
# existing ancestor is a directory this user may search (a file there: "Not a directory") — with no
# process forked; else (an ancestor it may not search, a relative path) 1, and `stat` says why
gone() {
  _d=$1
  while [ "$_d" != / ]; do
    case $_d in */*) _d=${_d%/*};; *) return 1;; esac
    _d=${_d:-/}
    if [ -d "$_d" ]; then [ -x "$_d" ]; return; fi
    if [ -e "$_d" ]; then return 0; fi
  done
  return 1
}

# missing KIND PATH: PATH is not there: `KIND PATH absent`, or unreadable with stat's reason
missing() {
  if gone "$2"; then rec "$1" "$2" absent; return; fi
  err=$(stat -c %n -- "$2" 2>&1 >/dev/null)
  case $err in
    *"No such file"*|*"Not a directory"*) rec "$1" "$2" absent;;
    *) rec "$1" "$2" unreadable "${err##*: }";;
  esac
}

# fact PATH: a file that can be read joins $readable (its real path $reals): its `path` line comes
# after the loop, with the mode, owner and size of all of them from one `stat`
fact() {
  case $seen in *"
$1
"*) return;; esac
  seen="$seen$1
"
  if [ -e "$1" ]; then
    if [ ! -f "$1" ]; then rec path "$1" unreadable 'not a regular file'
    elif [ ! -r "$1" ]; then rec path "$1" unreadable 'Permission denied'
    else
      real=$1
      [ -L "$1" ] && real=$(readlink -f -- "$1")
      readable="$readable$1
"
      reals="$reals$real
"
    fi
  elif [ -L "$1" ]; then rec path "$1" unreadable "a symlink to a missing file ($(readlink -- "$1"))"
  else missing path "$1"
  fi
}

listdir() {
  if [ -d "$1" ] && [ -r "$1" ] && [ -x "$1" ]; then
    rec dir "$1" listed
    for h in "$1"/$2; do if [ -e "$h" ] || [ -L "$h" ]; then fact "$h"; fi; done
  elif [ -d "$1" ]; then rec dir "$1" unreadable 'Permission denied'
  elif [ -e "$1" ]; then rec dir "$1" unreadable 'not a directory'
  else missing dir "$1"
  fi
}

deadline=10
unitnames=
runtimes=
scan() {
  while [ $# -gt 0 ]; do
    case $1 in
      -t) deadline=$2; shift 2;;
      -c) vcache=$2; shift 2;;
      -u) unitnames="$unitnames $2"; shift 2;;
      -r) runtimes="$runtimes $2"; shift 2;;
      -d) shift 3;;
      *) shift 2;;
    esac
  done
}
scan "$@"

first=${unitnames# }
first=${first%% *}
# shellcheck disable=SC2086  # unit names are words
units=$(bounded systemctl "$deadline" systemctl show $unitnames -p Id -p LoadState -p ActiveState \
          -p UnitFileState -p ActiveEnterTimestampMonotonic -p MainPID -p ExecStart -p DropInPaths 2>/dev/null) \
  || if [ $? = 124 ]; then rec error.systemctl "systemctl show gave no answer within ${deadline}s"
     else rec error.systemctl "$(bounded systemctl "$deadline" systemctl show "$first" -p Id 2>&1 >/dev/null | tail -n 1)"; fi
printf '%s\n' "$units" | awk 'BEGIN { RS = ""; FS = "\n" } {
  id = ""; for (i = 1; i <= NF; i++) if ($i ~ /^Id=/) { id = substr($i, 4); sub(/\.service$/, "", id) }
  for (i = 1; i <= NF; i++) if ($i !~ /^Id=/) printf "unit.%s\t%s\n", id, $i }'
for rt in $runtimes; do "${rt}_facts"; done

seen='
'
readable=
reals=
while [ $# -gt 0 ]; do
  case $1 in
    -f) fact "$2"; shift 2;;
    -d) listdir "$2" "$3"; shift 3;;
    *) shift 2;;
  esac
done

set -f
IFS='
'
# shellcheck disable=SC2086  # one file a line, no globbing
set -- $readable
unset IFS
set +f
# every readable file's mode, owner and size from one stat (a file that went meanwhile makes it
# fail: then one stat each, and that file is unreadable)
if [ $# -gt 0 ]; then
  if ! st=$(stat -L -c '%a %u %g %s' -- "$@" 2>/dev/null); then st=; fi
  for p in "$@"; do
    real=${reals%%"$nl"*}
    reals=${reals#*"$nl"}
    if [ -n "$st" ]; then
      line=${st%%"$nl"*}
      st=${st#*"$nl"}
    else
      line=$(stat -L -c '%a %u %g %s' -- "$p" 2>/dev/null) || line=
    fi
    if [ -n "$line" ]; then rec path "$p" file "$real" "$line"
    else rec path "$p" unreadable 'it went while its facts were read'; fi
  done
  if command -v tar >/dev/null 2>&1; then
    printf 'files\t'
    rc=$( { { tar -chf - -P -- "$@" 2>/dev/null; echo $? >&4; } | b64 >&3; } 4>&1 )
    printf '\n'
    rec tar "$rc"
  else
    for p in "$@"; do rec file "$p" "$(b64 < "$p")"; done
  fi
fi
rec end nodecfg-facts
