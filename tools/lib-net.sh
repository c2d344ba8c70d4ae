# shellcheck shell=bash
# Network steps (apt-get, debootstrap, downloads) get a time limit and retries: a stalled mirror
# must fail the run in minutes, and one dropped connection must not fail it at all (sourced).
#   retry TRIES SECONDS CMD...   runs CMD under `timeout SECONDS` up to TRIES times, 10 s apart;
#                                 returns CMD's last status. VFIOINIT_NET_TRIES overrides TRIES.
retry() {
  local tries=${VFIOINIT_NET_TRIES:-$1} secs=$2 n=1 rc
  shift 2
  while :; do
    timeout --kill-after=30 "$secs" "$@" && return 0
    rc=$?
    [ "$n" -ge "$tries" ] && { echo "retry: '$*' failed $n time(s) (last status $rc)" >&2; return "$rc"; }
    echo "retry: '$*' failed with status $rc (try $n of $tries); again in 10 s" >&2
    n=$((n + 1)); sleep 10
  done
}

# Inside those limits, each tool gives up on a stalled connection by itself and retries it:
# debootstrap's wget (default read timeout 900 s, 20 tries) reads WGETRC; apt takes -o options.
export WGETRC=${WGETRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/wgetrc}
APT_NET_OPTS=(-o Acquire::http::Timeout=60 -o Acquire::https::Timeout=60 -o Acquire::Retries=3)
