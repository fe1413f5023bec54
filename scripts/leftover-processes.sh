#!/usr/bin/env bash
# leftover-processes.sh USER: fail, listing them, if USER still runs processes.
# No processes (or no such user) is the good answer and exits 0. Zombies don't count:
# they have exited and wait for PID 1 to reap them. Used by .ci/run after the suite.
set -euo pipefail
user=${1:?usage: leftover-processes.sh USER}
# `ps -u USER` exits 1 when USER owns nothing, so list everyone's and filter by uid.
uid=$(id -u "$user" 2>/dev/null) || exit 0
leftover=$(ps -e -o pid=,uid=,stat= | awk -v uid="$uid" '$2 == uid && $3 !~ /^Z/ {print $1}')
[ -z "$leftover" ] && exit 0
echo "processes of $user still running:" >&2
ps -o pid,etime,args -p "$(echo $leftover | tr ' ' ',')" >&2 || true
echo "$leftover"
exit 1
