# shellcheck shell=sh
# The registry's catalog from the master: `catalog JSON`; with -r REPOSITORY (repeated; the names
# come from that catalog, so they are data) each one's `tags JSON` instead. Arguments: master.sh's
# -R -P -C and -r; stdin (master.sh): curl's config.

tags_of() {
  [ "$1" = -r ] || return 0
  rec tags "$(rcurl -s --max-time 10 -K "$ncfg" "$reg/v2/$2/tags/list" | tr -d '\n')"
}

repos=''
has_repo() { [ "$1" = -r ] && repos=1; }
options has_repo "$@"
if [ -n "$repos" ]; then
  options tags_of "$@"
else
  cat=$(rcurl -s --max-time 10 -K "$ncfg" "$reg/v2/_catalog")
  rec catalog "$(printf '%s' "$cat" | tr -d '\n')"
fi
