# shellcheck shell=sh
# registry-down on a registry host. Arguments: master.sh's -D -n -d -A -T -S, -l LABEL (each label
# that marks a container as nodecfg's), -p (purge), -s (the registry serves an S3 bucket: no data
# directory of its own; the bucket is never emptied). Tagged lines:
#   hung                 docker did not answer within the step's budget (nothing was changed)
#   foreign              the container is not nodecfg's (no such label): left, data and all
#   removed | absent     nodecfg's container was removed | there is none
#   mount KIND DIR       the data directory (bind) or volume that container mounted
#   purged KIND DIR      (-p) the data directory (bind: a path) or volume (KIND volume) deleted
#   kept DIR WHY         (-p) the data directory that was NOT deleted, and why
#   nothing              (-p) no data directory is known and the inventory's does not exist
#   bucket               (-p -s) the data is in the S3 bucket: kept
# What --purge deletes: the directory nodecfg's container actually mounts at /var/lib/registry; with
# no container, the last one nodecfg recorded in STATE_DIR/data-dirs when it created a registry. A
# directory neither names is not nodecfg's: kept. So is one that holds more than a registry's
# storage (`docker/`, `scheduler-state.json`). Then nodecfg's htpasswd and TLS directories go, and
# STATE_DIR/pushed (the tags registry-up pushed there, registry-prune's record).

errf=$(mktemp)
trap 'rm -f "$ncfg" "$errf"' EXIT
owned=''
for l in $labels; do owned="$owned{{index .Config.Labels \"$l\"}}"; done
mount='{{range .Mounts}}{{if eq .Destination "/var/lib/registry"}}{{.Type}}:{{if eq .Type "volume"}}{{.Name}}{{else}}{{.Source}}{{end}}{{end}}{{end}}'
info=$(bounded docker 0 docker container inspect --format "$owned|$mount" "$name" 2>"$errf")
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then rec hung; exit 0; fi
kind='' dir='' known=''
if [ $rc -eq 0 ]; then
  if [ -z "${info%%|*}" ]; then rec foreign; exit 0; fi
  m=${info#*|}
  if [ -n "$m" ]; then kind=${m%%:*} dir=${m#*:} known=1; rec mount "$kind" "$dir"; fi
  out=$(bounded docker 0 docker rm -f "$name" 2>&1 >/dev/null) || { printf '%s\n' "${out:-docker rm did not finish within ${step}s}" >&2; exit 4; }
  rec removed
elif grep -qi 'no such' "$errf"; then
  rec absent
else
  cat "$errf" >&2
  exit 4
fi
[ -n "$purge" ] || exit 0
if [ -n "$s3" ]; then
  rm -rf -- "$authdir" "$tlsdir"
  rec bucket
  exit 0
fi

records="$statedir/data-dirs"
if [ -z "$dir" ] && [ -r "$records" ]; then
  dir=$(tail -n 1 "$records")
  case $dir in /*) kind=bind;; ?*) kind=volume;; esac
fi
if [ -z "$dir" ]; then
  case $data in
    /*) if [ -e "$data" ]; then rec kept "$data" "nodecfg did not create or adopt it"; else rec nothing; fi;;
    *) if bounded docker 0 docker volume inspect -- "$data" >/dev/null 2>&1; then
         rec kept "$data" "nodecfg did not create or adopt it"
       else rec nothing; fi;;
  esac
  exit 0
fi
if [ -z "$known" ] && ! grep -qxF -- "$dir" "$records" 2>/dev/null; then
  rec kept "$dir" "nodecfg did not create or adopt it"
  exit 0
fi
# forget: the purged directory out of the record, and the record of the tags pushed into it
# (master_record.sh): they went with the data
forget() {
  if [ -r "$records" ]; then grep -vxF -- "$dir" "$records" > "$records.new"; mv -f "$records.new" "$records"; fi
  rm -f "$statedir/pushed"
}
if [ "$kind" = volume ]; then
  out=$(bounded docker 0 docker volume rm -- "$dir" 2>&1 >/dev/null) || { printf '%s\n' "$out" >&2; exit 4; }
  forget
  rec purged volume "$dir"
else
  case $dir in
    /|/bin|/boot|/dev|/etc|/home|/lib*|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/var|/var/lib|/mnt)
      rec kept "$dir" "a system directory"; exit 0;;
    /*) ;;
    *) rec kept "$dir" "not an absolute path"; exit 0;;
  esac
  if [ -d "$dir" ]; then
    extra=''
    for f in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
      [ -e "$f" ] || [ -L "$f" ] || continue
      case ${f##*/} in docker|scheduler-state.json|lost+found) ;; *) extra="$extra ${f##*/}";; esac
    done
    if [ -n "$extra" ]; then rec kept "$dir" "it holds more than a registry's data:$extra"; exit 0; fi
    # a mount point itself stays (busy): what is in it goes
    rm -rf -- "$dir" 2>/dev/null || [ -z "$(ls -A -- "$dir")" ] || { echo "could not delete all of $dir" >&2; exit 4; }
  fi
  forget
  rec purged bind "$dir"
fi
rm -rf -- "$authdir" "$tlsdir"
