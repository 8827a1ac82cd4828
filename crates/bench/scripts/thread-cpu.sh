#!/usr/bin/env bash
# CPU seconds and context switches per thread name of a running process,
# over the run of a command (BENCHMARKS.md, "Twelfth session"):
#   bash crates/bench/scripts/thread-cpu.sh PID standby-bench signup --url ... --server-pid PID
# Threads with the same name (the HTTP workers) are added together.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 PID COMMAND [ARGS...]" >&2; exit 2; fi
PID=$1; shift
[ -d "/proc/$PID" ] || { echo "$0: no process $PID" >&2; exit 2; }
TICKS=$(getconf CLK_TCK)
snap() {
  for t in /proc/"$PID"/task/*; do
    stat=$(cat "$t/stat" 2>/dev/null) || continue
    # Fields after the command name, which is in parentheses and may hold spaces.
    set -- ${stat##*) }
    name=$(tr ' ' _ < "$t/comm")
    invol=$(awk '/^nonvoluntary_ctxt_switches/ { print $2 }' "$t/status")
    vol=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status")
    echo "$name $((${12} + ${13})) $invol $vol"
  done | awk '{ c[$1] += $2; n[$1] += $3; v[$1] += $4 } END { for (k in c) print k, c[k], n[k], v[k] }' | sort
}
BEFORE=$(mktemp); AFTER=$(mktemp)
trap 'rm -f "$BEFORE" "$AFTER"' EXIT
snap > "$BEFORE"
"$@"
snap > "$AFTER"
# A thread that started or ended during the run counts from zero or is left out.
join -a 2 -e 0 -o 0,1.2,1.3,1.4,2.2,2.3,2.4 "$BEFORE" "$AFTER" |
  awk -v hz="$TICKS" '{ printf "  %-18s cpu %6.2f s  involuntary %7d  voluntary %7d\n", $1, ($5 - $2) / hz, $6 - $3, $7 - $4 }'
