"""Write BENCHMARKS.md from the outputs of scripts/bench-all.sh (argv[1])."""

import glob
import json
import os
import pathlib
import platform
import subprocess
import sys
import datetime

out = pathlib.Path(sys.argv[1])
root = pathlib.Path(__file__).resolve().parents[1]


def sh(cmd):
    try:
        return subprocess.check_output(cmd, shell=True, text=True).strip()
    except Exception:
        return "?"


def criterion():
    res = {}
    for bench in glob.glob(str(root / "target/criterion/**/new/benchmark.json"), recursive=True):
        meta = json.load(open(bench))
        est = json.load(open(pathlib.Path(bench).with_name("estimates.json")))
        res[(meta["group_id"], meta["function_id"])] = (est["median"]["point_estimate"], meta.get("throughput"))
    return res


c = criterion()
model = sh("lscpu | sed -n 's/^Model name:[ \\t]*//p'")
mem = sh("free -g | awk '/Mem:/ {print $2}'")
print("# Benchmarks\n")
print(f"Rewritten by `scripts/bench-all.sh` on {datetime.date.today()}: every comparison below ran side by side in that one run.")
print(f"Machine: {model}, {os.cpu_count()} cores, {mem} GiB RAM, {platform.system()} {platform.release()}; {sh('rustc --version')}.")
print("These machines are shared and noisy: compare ratios within a table, not absolute numbers across runs.\n")

print("## Core: record (single thread)\n")
print("`cargo bench -p ringmetrics-benches --bench record` (criterion, medians).\n")
floor = c.get(("record", "floor: relaxed fetch_add"), (None,))[0]
print("| what | median | vs floor | goal |")
print("|---|---:|---:|---|")
goals = {
    "ringmetrics: counter by handle": "<= 10 ns",
    "ringmetrics: counter by existing key": "<= 40 ns",
}
for (group, name), (ns, _) in sorted(c.items()):
    if group != "record":
        continue
    ratio = f"{ns / floor:.1f}x" if floor else ""
    print(f"| {name} | {ns:.1f} ns | {ratio} | {goals.get(name, '')} |")
ours = c.get(("record", "ringmetrics: counter by existing key"), (None,))[0]
mutex = c.get(("record", "peer: Mutex<HashMap> by key"), (None,))[0]
if ours and mutex:
    print(f"\nBy key, ringmetrics is {mutex / ours:.1f}x faster than the `Mutex<HashMap>` aggregator. The `metrics` crate's")
    print("counter is a single `fetch_add` on a handle: it keeps one total, no time buckets, no min/max, no resolutions.\n")

print("## Core: two threads\n")
print("`cargo bench -p ringmetrics-benches --bench threads` (throughput of 1M records per thread).\n")
one = c.get(("record_threads", "1 thread"), (None,))[0]
print("| what | time per batch | records/s | vs 1 thread | goal |")
print("|---|---:|---:|---:|---|")
for name, n, goal in (("1 thread", 1, ""), ("2 threads, distinct series", 2, ">= 1.7x"), ("2 threads, same series", 2, "no collapse below 1x")):
    v = c.get(("record_threads", name))
    if not v:
        continue
    ns = v[0]
    rate = n * 1_000_000 / (ns / 1e9)
    ratio = f"{rate / (1_000_000 / (one / 1e9)):.2f}x" if one else ""
    print(f"| {name} | {ns / 1e6:.1f} ms | {rate / 1e6:.1f} M | {ratio} | {goal} |")

print("\n## Core: rollover\n")
print("`cargo bench -p ringmetrics-benches --bench record`, group `rollover`: every record starts a new minute and folds")
print("the last one into the four rings (persisted depths), evicting a 1min bucket each time; saving, each bucket that leaves")
print("its ring unsaved goes to the unsaved-bucket buffer, drained every 1,000 records. A worker pays this once a minute")
print("per series and thread, not per record.\n")
print("| what | median |")
print("|---|---:|")
for (group, name), (ns, _) in sorted(c.items()):
    if group == "rollover":
        print(f"| {name} | {ns:.1f} ns |")

print("\n## Core: snapshot\n")
print("| what | median |")
print("|---|---:|")
for (group, name), (ns, _) in sorted(c.items()):
    if group == "snapshot":
        print(f"| {name} | {ns / 1000:.2f} µs |")

print("\n## Memory\n")
print("`cargo bench -p ringmetrics-benches --bench memory`: 10,240-series capacity, 10,000 histogram series recorded once a")
print("minute for two simulated hours. Reserved memory is allocated zeroed, so pages of unused series are never touched.\n")
print((out / "memory.md").read_text())

print("## C ABI\n")
print("`tests/c/bench.sh`: the same loops from C through the ABI (static library, `-O2`), from Rust calling the core, and")
print("from Rust with every argument hidden from the optimizer as C's are (`ffi-c/src/rust_bench.rs`); medians of 5")
print("interleaved rounds of 7 x 5M calls. `tests/c/bench.sh --callgrind` counts instructions per call (exact, not noisy).\n")
print((out / "c.md").read_text())
if (out / "c-callgrind.md").exists():
    print((out / "c-callgrind.md").read_text())

print("## Python\n")
print("`.venv/bin/python python/benches/bench_record.py`: medians of 7 repeats, call costs in thread CPU time; native rows")
print("subtract the empty loop. The plugin rows time `await metrics.<method>(key, 1)` as written (our record methods are")
print("native and return a finished awaitable; the floor row is the bare `await` of an `async def`). A loop stall is how late")
print("a 1 ms ticker wakes while the flush runs; the control row is the same ticker with nothing running, what this VM itself")
print("costs the loop.\n")
print((out / "python.md").read_text())

print("## Flush\n")
print("`cargo bench -p ringmetrics-postgres --bench flush`: the same database for all; the floor is the same upsert")
print("generated inside PostgreSQL by one `INSERT ... SELECT` (whole-row replace, no definitions, no client); WAL bytes from")
print("`pg_current_wal_lsn()` differences. Before each timed run every contender's tables are vacuumed, untimed (the steady")
print("state autovacuum keeps; the test server runs without it). ringmetrics sends a flush this large with binary COPY into a")
print("temporary table and merges it from there in one statement (see the README's \"How it works\"). `ringmetrics` connects")
print("for the flush as by default (a connection per flush, closed after it, TLS as the DSN's `sslmode` gives: `prefer`")
print("here, so TLS); `ringmetrics-held` keeps its connection from the flush before (`hold_connection`), as the floor's")
print("connection and Chancy's pool are kept.\n")
print((out / "flush.md").read_text())

print("\n## Connections and transactions of a worker\n")
print("`.venv/bin/python python/benches/bench_connections.py DSN 45`: one Chancy worker per plugin, each in a fresh database,")
print("the same steady load; backends of that database sampled every 0.25 s (a connection the syncer holds only while it")
print("writes is short and mostly missed by the sampler: the new-connections column counts it); committed transactions")
print("(`pg_stat_database.xact_commit`, everything the app does) per worker-minute; medians of alternating runs. Every")
print("new connection's start commits one transaction of its own in PostgreSQL's count: a connection per flush adds one per")
print("flush; `hold_connection=True` removes it and holds one more connection instead.\n")
print((out / "connections.md").read_text())

print("\n## Chancy 0.25\n")
print("Measured separately, in the Chancy 0.25.1 environment (`.venv-025/bin/python python/benches/bench_025.py`):")
print("see [BENCHMARKS-025.md](BENCHMARKS-025.md) for record and flush against 0.25's own plugin, side by side.")
