# shellcheck shell=sh
# registry-down on the master: remove nodecfg's own registry container (`removed`), and with
# paths after it their files (--purge: the data directory, the htpasswd and TLS directories). A
# container nodecfg did not make — no MANAGED_LABEL, no LEGACY_LABEL — is left, data and all:
# `foreign`. Arguments: NAME MANAGED_LABEL LEGACY_LABEL [PATH...].

name=$1 managed=$2 legacy=$3
shift 3
exec 0</dev/null
if docker container inspect "$name" >/dev/null 2>&1; then
  labels="{{index .Config.Labels \"$managed\"}}{{index .Config.Labels \"$legacy\"}}"
  if [ -z "$(docker container inspect --format "$labels" "$name")" ]; then echo foreign; exit 0; fi
  docker rm -f "$name" >/dev/null && echo removed
fi
if [ $# -gt 0 ]; then rm -rf -- "$@"; fi
