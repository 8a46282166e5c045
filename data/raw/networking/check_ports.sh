#!/usr/bin/env bash
# check_ports.sh - report which TCP services on a list of hosts accept connections.
#
# Usage:
#   check_ports.sh [-t SECONDS] [-f FILE] [host:port ...]
#
# Targets come from the command line or from a file with one "host:port" per line (blank lines and lines
# starting with '#' are ignored). Each target is probed with bash's /dev/tcp pseudo-device, so no extra
# tools are needed; `timeout` from coreutils bounds every attempt.
#
# Exit status: 0 if every target is open, 1 if any is closed or timed out, 2 on a usage error.

set -euo pipefail

TIMEOUT=3
TARGET_FILE=""

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

# probe HOST PORT -> prints "open", "closed" or "timeout"
probe() {
    local host=$1 port=$2 rc=0
    timeout "$TIMEOUT" bash -c "exec 3<>/dev/tcp/${host}/${port}" 2>/dev/null || rc=$?
    case $rc in
        0)   echo "open" ;;
        124) echo "timeout" ;;   # the firewall dropped the SYN, or the host is down
        *)   echo "closed" ;;    # connection refused (RST) or name did not resolve
    esac
}

# read_targets FILE -> prints targets, skipping comments and blank lines
read_targets() {
    grep -Ev '^[[:space:]]*(#|$)' "$1"
}

main() {
    while getopts ":t:f:h" opt; do
        case $opt in
            t) TIMEOUT=$OPTARG ;;
            f) TARGET_FILE=$OPTARG ;;
            h|*) usage ;;
        esac
    done
    shift $((OPTIND - 1))

    local -a targets=("$@")
    if [[ -n $TARGET_FILE ]]; then
        mapfile -t -O "${#targets[@]}" targets < <(read_targets "$TARGET_FILE")
    fi
    [[ ${#targets[@]} -gt 0 ]] || usage

    local failures=0 target host port state
    printf '%-32s %-6s %s\n' "HOST" "PORT" "STATE"
    for target in "${targets[@]}"; do
        host=${target%:*}
        port=${target##*:}
        if [[ ! $port =~ ^[0-9]+$ ]] || (( port < 1 || port > 65535 )); then
            echo "invalid target: $target" >&2
            failures=$((failures + 1))
            continue
        fi
        state=$(probe "$host" "$port")
        printf '%-32s %-6s %s\n' "$host" "$port" "$state"
        [[ $state == open ]] || failures=$((failures + 1))
    done

    if (( failures > 0 )); then
        echo "$failures target(s) not reachable" >&2
        return 1
    fi
}

main "$@"
