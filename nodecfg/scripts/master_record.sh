# shellcheck shell=sh
# What nodecfg pushed into the registry on this host, kept in STATE_DIR/pushed (root only, 0600):
# one line per tag, `REPOSITORY<tab>TAG<tab>DIGEST` (the manifest digest nodecfg tagged). registry-up
# adds the tags it pushed (a tag pushed again replaces its line); registry-prune forgets the tags
# it removed and those the registry no longer has. A tag nodecfg did not push is never in it, so
# registry-prune never removes one (an operator's own image stays). registry-down keeps it;
# `registry-down --purge` deletes it with the data it describes. A tag pushed again over a revision
# nodecfg had pushed keeps that revision as `REPOSITORY<tab>@DIGEST<tab>DIGEST` (it stays in the
# registry untagged, which registry-prune deletes when no tag uses it).
# Arguments: master.sh's -D -S, then -r REPOSITORY TAG DIGEST (repeated): DIGEST `-` forgets the tag.
# Output: `recorded N`, the lines the file holds now.

entries=''
recopt() {
  case $1 in -r) entries="$entries$2$tab$3$tab$4
";; esac
}
options recopt "$@"

file="$statedir/pushed"
install -d -m 700 "$statedir"
new=$(umask 077; mktemp "$statedir/.pushed.XXXXXX")
trap 'rm -f "$ncfg" "$new"' EXIT
# the old lines whose repository and tag this run does not name, then this run's (forgotten ones left out)
{
  if [ -r "$file" ]; then
    awk -F '\t' -v named="$entries" '
      BEGIN { n = split(named, l, "\n"); for (i = 1; i <= n; i++) { split(l[i], f, "\t"); seen[f[1] "\t" f[2]] = 1 } }
      !(($1 "\t" $2) in seen)' "$file"
  fi
  printf '%s' "$entries" | awk -F '\t' '$3 != "-" && $3 != ""'
} > "$new"
chmod 600 "$new"
mv -f "$new" "$file"
rec recorded "$(wc -l < "$file" | tr -d ' ')"
