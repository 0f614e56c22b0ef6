#!/usr/bin/env python3
"""memsample.py PPROF_PORT OUT: what a cspool daemon's RSS is made of, every 2 s.

Finds the process listening on PPROF_PORT (the daemon's --pprof-addr) and
appends a JSON line to OUT every 2 seconds (for at most 4 hours): VmRSS and
VmHWM; the resident MB of its mappings from /proc/PID/smaps by kind (binary:
the program's pages; goheap: anonymous mappings below 0x7f0000000000, where
the Go runtime puts its heap arenas; anon_big: anonymous mappings of 1 MB and
more above it, the SQLite connections' Wasm memories, one each, listed in
wasm; shm: the database's -shm; otherfile, anon_small: the rest); and the Go
runtime's figures from /debug/pprof/heap?debug=1 (MB). Used for the
breakdown in docs/BENCHMARKS.md ("Device: a million messages"):

  python3 bench/lib/memsample.py 24146 samples.jsonl &
  PORTS=24140 M=100000 bash bench/million.sh
"""
import sys, time, re, subprocess, urllib.request, os, json
pport, out = sys.argv[1], sys.argv[2]
def findpid():
    o = subprocess.run(["ss", "-ltnpH", f"sport = :{pport}"], capture_output=True, text=True).stdout
    m = re.search(r"pid=(\d+)", o)
    return int(m.group(1)) if m else None
def smaps(pid):
    cats = {}
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                lo, hi = [int(x, 16) for x in parts[0].split("-")]
                path = parts[5] if len(parts) > 5 else ""
                size = hi - lo
                if path.endswith("-shm"): cur = "shm"
                elif path.endswith("cspool"): cur = "binary"
                elif path: cur = "otherfile"
                elif lo < 0x7f0000000000: cur = "goheap"
                elif size >= 1 << 20: cur = "anon_big"
                else: cur = "anon_small"
            elif line.startswith("Rss:"):
                cats[cur] = cats.get(cur, 0) + int(line.split()[1])
    # per wasm region
    return {k: round(v / 1024, 1) for k, v in cats.items()}
def wasm_regions(pid):
    regs = []
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                lo, hi = [int(x, 16) for x in parts[0].split("-")]
                cur = (hi - lo >= 1 << 20 and len(parts) <= 5 and lo >= 0x7f0000000000)
            elif line.startswith("Rss:") and cur:
                regs.append(round(int(line.split()[1]) / 1024, 1))
    return regs
def gostats():
    try:
        t = urllib.request.urlopen(f"http://127.0.0.1:{pport}/debug/pprof/heap?debug=1", timeout=5).read().decode()
    except Exception:
        return {}
    d = {}
    for k in ("HeapAlloc", "HeapSys", "HeapInuse", "HeapIdle", "HeapReleased", "NextGC", "Sys", "StackInuse"):
        m = re.search(rf"# {k} = (\d+)", t)
        if m: d[k] = round(int(m.group(1)) / 2**20, 1)
    return d
peak = 0
with open(out, "a") as o:
    pid = None
    end = time.time() + 4 * 3600
    while time.time() < end:
        p = findpid()
        if p is None:
            time.sleep(1); continue
        try:
            st = open(f"/proc/{p}/status").read()
            rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1)) // 1024
            hwm = int(re.search(r"VmHWM:\s+(\d+)", st).group(1)) // 1024
            rec = {"t": time.strftime("%H:%M:%S"), "pid": p, "rss": rss, "hwm": hwm, "smaps": smaps(p), "wasm": wasm_regions(p), "go": gostats(), "load": open("/proc/loadavg").read().split()[0]}
        except Exception as e:
            time.sleep(1); continue
        o.write(json.dumps(rec) + "\n"); o.flush()
        time.sleep(2)
