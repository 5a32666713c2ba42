#!/usr/bin/env bash
# The machine's floor under issues 11 and 13's isolation ratios: each isolation bench
# with the attacker in a separate `sluice` process (`--victim-store apart`: its own
# node, store, engine and runtimes; only the cores, the memory and the disk shared),
# alternated with the bench as it runs (`shared`, one node for both orgs). What the
# `apart` side gives is what no design running both tenants on this machine can go
# below; what `shared` adds above it is Sluice's own.
# Usage: benches/isolation/machine_floor.sh [path to the sluice binary] [rounds]
set -euo pipefail
sluice=${1:-target/release/sluice}
rounds=${2:-3}
for bench in noisy-neighbour cost-fairness bulk-import; do
    for store in apart shared; do
        echo "==> $bench --victim-store $store"
        "$sluice" bench "$bench" --runs "$rounds" --victim-store "$store" | tail -1
    done
done
