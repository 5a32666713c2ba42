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

Each setting runs twice: syncing back to back, and paced at `--rate` syncs a second
(200 by default, the isolation benches' victim rate), which is how a steady tenant
meets the disk. The paced p99 beside busy cores over the paced p99 idle is the least
a durable victim's tail can grow by when a neighbour keeps the cores busy, whatever
the store does.

`--placement` instead pins the probe and one spinner to each pair of cores in turn
(idle alone on each core, then each spinner core beside each probe core): on a
virtual machine, whether the stall follows a particular virtual CPU being busy.

    python3 benches/disk/sync_under_load.py [--seconds 5] [--rate 200] [--dir DIR] [--placement]

The last line is JSON.
"""

import argparse
import json
import multiprocessing
import os
import tempfile
import time


def spin(policy: str, cpu) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if policy == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)
    while True:
        pass


def probe(path: str, seconds: float, rate: float) -> dict:
    """Syncs for `seconds`, back to back (`rate` 0) or `rate` times a second."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"x" * 4096
    latencies = []
    end = time.monotonic() + seconds
    due = time.monotonic()
    try:
        while time.monotonic() < end:
            if rate > 0:
                due += 1.0 / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
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
        "over_5ms": sum(1 for x in latencies if x > 5000),
    }


def measure(path: str, seconds: float, rate: float, spinners: list, probe_cpu=None) -> dict:
    """One probe beside `spinners` ((policy, cpu) pairs), each a process of its own."""
    processes = [multiprocessing.Process(target=spin, args=s, daemon=True) for s in spinners]
    for process in processes:
        process.start()
    if processes:
        time.sleep(0.2)
    if probe_cpu is not None:
        os.sched_setaffinity(0, {probe_cpu})
    try:
        return probe(path, seconds, rate)
    finally:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        for process in processes:
            process.kill()
            process.join()


def show(label: str, result: dict) -> None:
    print(
        f"{label:<40} {result['syncs']:>7} syncs  p50 {result['p50_us']:>6} µs  "
        f"p99 {result['p99_us']:>6} µs  p99.9 {result['p999_us']:>6} µs  "
        f"max {result['max_us']:>6} µs  over 1 ms: {result['over_1ms']:>5}  over 5 ms: {result['over_5ms']}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="paced syncs a second (the victim's rate)")
    parser.add_argument("--dir", default=None, help="where the probe's file goes (default: the temp dir)")
    parser.add_argument("--placement", action="store_true", help="pin the probe and a spinner to each core")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results = {}
    with tempfile.TemporaryDirectory(prefix="sluice-sync-probe-", dir=args.dir) as directory:
        path = os.path.join(directory, "log")
        if args.placement:
            for probe_cpu in range(cores):
                label = f"probe on cpu {probe_cpu}, others idle"
                results[label] = measure(path, args.seconds, 0, [], probe_cpu)
                show(label, results[label])
                for spin_cpu in range(cores):
                    label = f"probe on cpu {probe_cpu}, spinner on cpu {spin_cpu}"
                    results[label] = measure(path, args.seconds, 0, [("nice", spin_cpu)], probe_cpu)
                    show(label, results[label])
        else:
            settings = [("idle", None), ("cores busy, nice 19", "nice"), ("cores busy, SCHED_IDLE", "idle")]
            for label, policy in settings:
                spinners = [(policy, None)] * cores if policy else []
                for rate in (0, args.rate):
                    name = label if rate == 0 else f"{label}, {rate:g}/s"
                    results[name] = measure(path, args.seconds, rate, spinners)
                    show(name, results[name])
            idle = results[f"idle, {args.rate:g}/s"]["p99_us"]
            busy = results[f"cores busy, nice 19, {args.rate:g}/s"]["p99_us"]
            results["paced_p99_busy_over_idle"] = round(busy / max(idle, 1), 2)
            print(f"paced p99 with the cores busy ÷ idle: {results['paced_p99_busy_over_idle']:.2f}")
    print(json.dumps({"scenario": "sync-under-load", "cores": cores, "seconds": args.seconds, "rate": args.rate,
                      "runs": results}))


if __name__ == "__main__":
    main()
