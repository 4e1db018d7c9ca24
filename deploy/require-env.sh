#!/bin/sh
# Start a service only when its credentials are set: the monitoring services of
# docker-compose.yml run through this, so none of them ever serves with a default login.
#
#   require-env.sh HINT VAR... -- COMMAND [ARG...]
#
# Exits 1, printing HINT and the names of the empty VARs, when any VAR is unset or empty;
# else runs COMMAND in its place. (A check in the container, not `${VAR:?}` in the compose
# file: compose interpolates every service, so that would also stop a plain `up`.)
set -eu
hint=$1
shift
missing=""
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  if [ -z "$(printenv "$1" || true)" ]; then
    missing="$missing $1"
  fi
  shift
done
if [ "$#" -eq 0 ]; then
  echo "usage: require-env.sh HINT VAR... -- COMMAND [ARG...]" >&2
  exit 2
fi
shift # the "--"
if [ -n "$missing" ]; then
  echo "refusing to start without credentials (empty:$missing): $hint" >&2
  exit 1
fi
exec "$@"
