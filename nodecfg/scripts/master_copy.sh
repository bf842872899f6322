# shellcheck shell=sh
# registry-up on a replica that keeps its own data: copy blobs from another replica's registry
# (the first one, which the images were pushed to) into this host's registry, inside the site, so the
# operator's link carries each blob once. Each blob streams from the other registry straight into an
# upload opened here (POST, then PUT ?digest=: the registry here checks the digest); four at a time.
# Arguments: master.sh's -D -R -P -C, then -F URL (the other registry's base URL as this host
# reaches it; over TLS verified with the same CA, -C) and -b REPOSITORY DIGEST (repeated: the
# repository the blob goes to first). stdin (master.sh): curl's config (the same login on every
# replica). Output, a line per blob: `copied DIGEST SIZE` or `failed DIGEST <base64 reason>`.

from='' blobs=''
copyopt() {
  case $1 in
    -F) from=$2;;
    -b) blobs="$blobs $2"'|'"$3";;
  esac
}
options copyopt "$@"

work=$(mktemp -d)
trap 'rm -f "$ncfg"; rm -rf "$work"' EXIT

# fcurl ARG...: curl to the other registry (over TLS: this host's copy of the CA)
fcurl() { if [ -n "$cafile" ]; then curl --cacert "$cafile" "$@"; else curl "$@"; fi; }
# left: the seconds left of this step's budget (at least 1), for curl's --max-time
left() { clock; _l=$(( budget_end - _now )); [ "$_l" -ge 1 ] || _l=1; echo "$_l"; }

# copy_one N REPOSITORY DIGEST: the blob streamed from the other registry into an upload opened here
# (no temp file, no second hashing: the registry here checks the digest of what it is given and
# refuses a blob that is not it); its line into $work/N.out
copy_one() {
  _out="$work/$1.out" _get="$work/$1.get"
  _loc=$(rcurl -s --max-time "$(left)" -K "$ncfg" -X POST -D - -o /dev/null "$reg/v2/$2/blobs/uploads/" \
         | awk 'tolower($1) == "location:" { sub(/\r$/, "", $2); print $2 }')
  case $_loc in
    http*://*) ;;
    /*) _loc="$reg$_loc";;
    *) rec failed "$3" "$(printf 'POST %s/v2/%s/blobs/uploads/ gave no upload location' "$reg" "$2" | b64)" > "$_out"
       return;;
  esac
  case $_loc in *\?*) _put="$_loc&digest=$3";; *) _put="$_loc?digest=$3";; esac
  _put=$(fcurl -s -L --max-time "$(left)" -K "$ncfg" -o - -w '%{stderr}%{http_code} %{size_download}' "$from/v2/$2/blobs/$3" \
           2>"$_get" \
         | rcurl -s --max-time "$(left)" -K "$ncfg" -o /dev/null -w '%{http_code}' -T - \
             -H 'Content-Type: application/octet-stream' "$_put")
  _got=$(cat "$_get" 2>/dev/null)
  if [ "${_got%% *}" != 200 ]; then
    rec failed "$3" "$(printf 'GET %s/v2/%s/blobs/%s answered %s' "$from" "$2" "$3" "${_got%% *}" | b64)" > "$_out"
  elif [ "$_put" = 201 ]; then
    rec copied "$3" "${_got#* }" > "$_out"
  else
    rec failed "$3" "$(printf 'PUT of the blob here answered %s' "${_put:-nothing}" | b64)" > "$_out"
  fi
}

n=0
running=0
for b in $blobs; do
  n=$((n + 1))
  copy_one "$n" "${b%%|*}" "${b#*|}" &
  running=$((running + 1))
  if [ "$running" -ge 4 ]; then wait; running=0; fi
done
wait
i=0
while [ "$i" -lt "$n" ]; do i=$((i + 1)); cat "$work/$i.out" 2>/dev/null; done
true
