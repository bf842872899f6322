# shellcheck shell=sh
# rollback: put back one runtime's previous files and bring it back as it was, every wait
# bounded; ends with `end rollback`.
#
# Arguments (nodecfg/configure.py `rollback_script`):
#   -t DEADLINE -r RUNTIME -u UNIT -a ACTION -w WAS_ACTIVE(1|0)
#   -F PATH REAL I BAK OURS   a file of the plan: its backup (- when it did not exist before) or
#                             the sha256 of what nodecfg wrote (a new file is removed only if it
#                             still holds that); I its index in the apply (its temp file)
#
# Works from the plan and facts alone (the apply may have died half-way). The runtime's
# <RUNTIME>_rollback brings it back; it reads $job (its queued job), $deadline, $was_active and
# calls `changed` (files were restored for a runtime that acts on them) and `down` (it was active
# and is not).

deadline=10 rt='' unit='' action=none was_active=0
scan() {
  while [ $# -gt 0 ]; do
    case $1 in
      -t) deadline=$2; shift 2;;
      -r) rt=$2; shift 2;;
      -u) unit=$2; shift 2;;
      -a) action=$2; shift 2;;
      -w) was_active=$2; shift 2;;
      -F) shift 6;;
      *) shift;;
    esac
  done
}
scan "$@"
exec 0</dev/null

restored=0
restore_all() {
  while [ $# -gt 0 ]; do
    if [ "$1" != -F ]; then shift; continue; fi
    path=$2 real=$3 i=$4 bak=$5 ours=$6
    shift 6
    rm -f -- "${real%/*}/.nodecfg.$i."* 2>/dev/null
    if [ "$bak" != - ]; then
      if [ -e "$bak" ]; then mv -f -- "$bak" "$real" && rec restored "$path" && restored=1; fi
    elif [ -f "$real" ]; then
      s=$(sha256sum < "$real")
      if [ "${s%% *}" = "$ours" ]; then rm -f -- "$real" && rec removed "$path" && restored=1; fi
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
