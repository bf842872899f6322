# shellcheck shell=sh
# A step of its own: `call.sh FUNCTION ARG...` runs one function of the runtimes' files (the smoke
# test's second steps: containerd_pulls, containers_look, containers_pull). -T SECONDS first sets
# the node's budget (lib.sh `budget`), then -e ENDPOINT $endpoint, -S SCHEME $scheme (http or https).
# Ends with `end call` (output without it was cut short).
exec 0</dev/null
endpoint=
scheme=http
if [ "$1" = -T ]; then budget "$2"; shift 2; fi
if [ "$1" = -e ]; then endpoint=$2; shift 2; fi
if [ "$1" = -S ]; then scheme=$2; shift 2; fi
"$@"
rec end call
