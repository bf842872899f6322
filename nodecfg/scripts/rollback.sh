# shellcheck shell=sh
# rollback: put back one runtime's previous files and bring it back as it was, every wait
# bounded; ends with `end rollback`.
#
# Arguments (nodecfg/configure.py `rollback_script`):
#   -t DEADLINE -r RUNTIME -u UNIT -a ACTION -w WAS_ACTIVE(1|0) -R RUN
#   -F PATH REAL I BAK OURS OLD MODE   a file of the plan: its backup (- when it did not exist
#                             before), the sha256 of what this run wrote (OURS) and of what facts
#                             saw (OLD, or `absent`), its mode then (octal, or -); I its index in
#                             the apply (its temp file `.nodecfg.<RUN>.<I>`)
#
# Compare-and-swap, as the apply: a file is put back (its backup renamed over it, its old mode
# restored; a new one removed) only while it still holds exactly what this run wrote. One that
# still holds what facts saw was never replaced (the apply died first): left, a leftover backup of
# it removed. Anything else was changed on the node since: left as it is, and `conflict <path>`
# fails the node, naming it. Only this run's own temp files are removed.
#
# Works from the plan and facts alone (the apply may have died half-way). The runtime's
# <RUNTIME>_rollback brings it back; it reads $job (its queued job), $deadline, $was_active and
# calls `changed` (files were restored for a runtime that acts on them) and `down` (it was active
# and is not).

deadline=10 rt='' unit='' action=none was_active=0 run=0
scan() {
  while [ $# -gt 0 ]; do
    case $1 in
      -t) deadline=$2; shift 2;;
      -R) run=$2; shift 2;;
      -r) rt=$2; shift 2;;
      -u) unit=$2; shift 2;;
      -a) action=$2; shift 2;;
      -w) was_active=$2; shift 2;;
      -F) shift 8;;
      *) shift;;
    esac
  done
}
scan "$@"
exec 0</dev/null

# sha FILE: its sha256, `absent`, or `unreadable`
sha() {
  if [ ! -e "$1" ] && [ ! -L "$1" ]; then echo absent; return; fi
  _s=$(sha256sum < "$1" 2>/dev/null) && echo "${_s%% *}" || echo unreadable
}

restored=0
restore_all() {
  while [ $# -gt 0 ]; do
    if [ "$1" != -F ]; then shift; continue; fi
    path=$2 real=$3 i=$4 bak=$5 ours=$6 old=$7 mode=$8
    shift 8
    rm -f -- "${real%/*}/.nodecfg.$run.$i"
    now=$(sha "$real")
    if [ "$now" = "$ours" ]; then
      if [ "$bak" = - ]; then
        rm -f -- "$real" && rec removed "$path" && restored=1
      elif [ -f "$bak" ] && [ ! -L "$bak" ] && mv -f -- "$bak" "$real"; then
        if [ "$mode" != - ]; then chmod "$mode" "$real"; fi
        rec restored "$path"
        restored=1
      else
        rec conflict "$path" "its backup $bak is gone: left as nodecfg wrote it"
      fi
    elif [ "$now" = "$old" ]; then
      # never replaced: a backup made just before the apply died is the same file; drop the name
      if [ "$bak" != - ] && [ -f "$bak" ] \
         && [ "$(stat -c %d:%i -- "$bak")" = "$(stat -L -c %d:%i -- "$real")" ]; then rm -f -- "$bak"; fi
    else
      rec conflict "$path" "changed on the node since nodecfg wrote it: left as it is"
    fi
  done
}

changed() { [ "$restored" = 1 ] && [ "$action" != none ]; }
down() { [ "$was_active" = 1 ] && ! bounded systemctl "$deadline" systemctl is-active -q "$unit.service"; }

restore_all "$@"
job=$(bounded systemctl "$deadline" systemctl show -p Job --value "$unit.service" 2>/dev/null)
"${rt}_rollback"
settle_units "$deadline" after. "$unit.service"
rec end rollback
