#!/usr/bin/env python3
"""Attribute WAL records, bytes and full-page images to relations.

Reads the -v output of BenchmarkAppendUsers (internal/spool/pgstore) on
stdin, and for each sub-benchmark runs pg_waldump over the WAL of its timed
appends ("WAL START to END; name=ts/db/node ..." lines), then prints, per
relation of the store, the records, WAL bytes and full-page images per
append. The WAL must still be on disk: run it right after the benchmark, or
keep the WAL with a replication slot for the run (see docs/BENCHMARKS.md).

  PGWAL=/var/lib/postgresql/15/main/pg_wal python3 bench/postgres/walrels.py < out.txt
"""
import collections
import os
import re
import subprocess
import sys

WALDUMP = os.environ.get("PG_WALDUMP", "/usr/lib/postgresql/15/bin/pg_waldump")
PGWAL = os.environ.get("PGWAL", "/var/lib/postgresql/15/main/pg_wal")


def dump(start, end, names, appends):
    out = subprocess.run([WALDUMP, "-p", PGWAL, "-s", start, "-e", end],
                         capture_output=True, text=True)
    if out.returncode != 0 and not out.stdout:
        sys.exit(out.stderr)
    recs, byts, fpi = collections.Counter(), collections.Counter(), collections.Counter()
    kinds = collections.Counter()
    for line in out.stdout.splitlines():
        m = re.search(r"rmgr: (\S+)\s+len \(rec/tot\):\s+\d+/\s*(\d+),.*desc: (\S+)", line)
        if not m:
            continue
        refs = re.findall(r"blkref #\d+: rel (\d+/\d+/\d+)(?: fork \w+)? blk \d+( FPW)?", line)
        first = None
        for rel, fpw in refs:
            n = names.get(rel, "(other relations)")
            if fpw:
                fpi[n] += 1
            first = first or n
        first = first or "(no relation: " + m.group(1) + ")"
        recs[first] += 1
        byts[first] += int(m.group(2))
        kinds[(first, m.group(1) + "/" + m.group(3))] += 1
    print(f"{'relation':28} {'records/op':>10} {'bytes/op':>10} {'FPI/op':>8}")
    for n, b in byts.most_common():
        print(f"{n:28} {recs[n]/appends:10.2f} {b/appends:10.0f} {fpi[n]/appends:8.3f}")
    print(f"{'total':28} {sum(recs.values())/appends:10.2f} {sum(byts.values())/appends:10.0f} {sum(fpi.values())/appends:8.3f}")
    print("records by kind (per append):")
    for (n, k), c in kinds.most_common(14):
        print(f"  {n:28} {k:28} {c/appends:6.3f}")


def main():
    bench = None
    for line in sys.stdin:
        m = re.match(r"(BenchmarkAppend\S+)\s*$", line.strip())
        if m:
            bench = m.group(1)
        m = re.search(r"WAL (\S+) to (\S+); (.*)", line)
        if m:
            start, end, rels = m.groups()
            names = dict(reversed(kv.split("=")) for kv in rels.split())
            pending = (start, end, names)
        m = re.match(r"(BenchmarkAppend\S+)-\d+\s+(\d+)\s", line)
        if m and pending:
            print(f"== {m.group(1)}: {m.group(2)} appends, WAL {pending[0]} to {pending[1]}")
            dump(pending[0], pending[1], pending[2], int(m.group(2)))
            pending = None


pending = None
main()
