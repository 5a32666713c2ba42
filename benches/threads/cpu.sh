#!/usr/bin/env bash
# CPU time and context switches of each kind of thread over one `sluice bench` run,
# summed by thread name (writer, plug-ins' runtime, node's runtime, checkpoints, …),
# with the run's own JSON line first. Needs `perf` (Debian's linux-perf).
#
#   benches/threads/cpu.sh [sluice options] <bench scenario> [scenario options]
#   e.g. benches/threads/cpu.sh --node-cores 1 throughput
#
# The process's main thread also runs the benchmark's bare-wasmtime loops (their
# threads carry the binary's name), so its line is not the node's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
sluice=${SLUICE_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice}
[[ -x $sluice ]] || { echo "cpu.sh: $sluice not found (cargo build --release)" >&2; exit 2; }
out=$(mktemp) stat=$(mktemp)
trap 'rm -f "$out" "$stat"' EXIT
sluice_options=()
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --log-json) sluice_options+=("$1"); shift ;;
    *=*) sluice_options+=("$1"); shift ;;
    *) sluice_options+=("$1" "$2"); shift 2 ;;
  esac
done
"$sluice" "${sluice_options[@]}" bench "$@" >"$out" 2>&1 &
pid=$!
# perf counts each thread that exists when it attaches on its own; a thread started later
# is counted with the thread that started it. So it attaches once the node's writer runs
# (`throughput` and `backlog` start their nodes first; the isolation benches start fresh
# ones per phase, whose threads then count under the threads that started them).
for _ in $(seq 1 200); do
  grep -qs sluice-writer /proc/"$pid"/task/*/comm && break
  sleep 0.05
done
perf stat --per-thread -e task-clock,context-switches -p "$pid" -o "$stat" 2>/dev/null || true
wait "$pid"
tail -n 1 "$out"
awk '
  / task-clock / || / context-switches / {
    name = $1; sub(/-[0-9]+$/, "", name); sub(/-$/, "", name)
    value = $2; gsub(",", "", value)
    if ($0 ~ / task-clock /) cpu[name] += value; else switches[name] += value
  }
  END {
    for (n in cpu) printf "  %-16s %8.2f s CPU %9d context switches\n", n, cpu[n] / 1000, switches[n]
  }' "$stat" | sort
