#!/usr/bin/env python3
"""How long this machine's disk takes to sync a small write, idle and while every core
is busy: the floor under any durable commit's latency, Sluice's or anyone's.

SQLite's write-ahead log ends each commit with an `fdatasync` of the log; a tenant's
end-to-end latency includes two of them (its event's commit and its job's). This
probe writes 4 KiB at a time into one file (cycling over 2 MiB, as a log does) and
syncs it, for `--seconds`, first with nothing else running, then beside one spinning
process per core at the lowest priority (nice 19), then beside spinners under
SCHED_IDLE (which the kernel runs only when nothing else wants a core). If the busy
runs' tail is long and the idle one's is not, the wait is outside the guest's
scheduler: no priority a process can take shortens it.

    python3 benches/disk/sync_under_load.py [--seconds 5] [--dir DIR]

The last line is JSON.
"""

import argparse
import json
import multiprocessing
import os
import tempfile
import time


def spin(policy: str) -> None:
    if policy == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)
    while True:
        pass


def probe(path: str, seconds: float) -> dict:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"x" * 4096
    latencies = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            os.pwrite(fd, block, (len(latencies) % 512) * 4096)
            began = time.perf_counter()
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - began) * 1e6)
    finally:
        os.close(fd)
    latencies.sort()
    n = len(latencies)

    def at(p: float) -> int:
        return int(latencies[min(n - 1, int(n * p))])

    return {
        "syncs": n,
        "p50_us": at(0.5),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": int(latencies[-1]),
        "over_1ms": sum(1 for x in latencies if x > 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", default=None, help="where the probe's file goes (default: the temp dir)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results = {}
    with tempfile.TemporaryDirectory(prefix="sluice-sync-probe-", dir=args.dir) as directory:
        path = os.path.join(directory, "log")
        for label, policy in [("idle", None), ("cores busy, nice 19", "nice"), ("cores busy, SCHED_IDLE", "idle")]:
            spinners = []
            if policy:
                spinners = [multiprocessing.Process(target=spin, args=(policy,), daemon=True) for _ in range(cores)]
                for spinner in spinners:
                    spinner.start()
                time.sleep(0.2)
            try:
                result = probe(path, args.seconds)
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.join()
            results[label] = result
            print(
                f"{label:<26} {result['syncs']:>7} syncs  p50 {result['p50_us']:>6} µs  "
                f"p99 {result['p99_us']:>6} µs  p99.9 {result['p999_us']:>6} µs  "
                f"max {result['max_us']:>6} µs  over 1 ms: {result['over_1ms']}"
            )
    print(json.dumps({"scenario": "sync-under-load", "cores": cores, "seconds": args.seconds, "runs": results}))


if __name__ == "__main__":
    main()
