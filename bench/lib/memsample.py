#!/usr/bin/env python3
"""memsample.py PPROF_PORT OUT: what a cspool daemon's RSS is made of, every 2 s
(INTERVAL=SECONDS in the environment: another interval).

Finds the process listening on PPROF_PORT (the daemon's --pprof-addr) and
appends a JSON line to OUT every 2 seconds (for at most 4 hours): VmRSS and
VmHWM; the resident MB of its mappings from /proc/PID/smaps by kind (binary:
the program's pages; goheap: the Go runtime's heap arenas; wasm: the SQLite
connections' Wasm memories, one each, listed in wasm (kinds below); shm: the
database's -shm; otherfile, anon_small: the rest); and the Go
runtime's figures from /debug/pprof/heap?debug=1 (MB); the binary's pages
apart by kind (bin_text: its code, bin_ro: read-only data, the functions'
tables among them, bin_rw: its data); and RssAnon, RssFile, RssShmem from
/proc/PID/status. At each sample larger than every one before, it keeps
/proc/PID/smaps in OUT.peak-smaps and the heap profile in OUT.peak-heap
(`go tool pprof -sample_index=inuse_space OUT.peak-heap`). With GOSTATS=0 in
the environment it asks the daemon for nothing (no Go figures, no profile):
writing a profile reads the program's tables of functions to name them,
which makes more of the binary's pages resident. Used for the
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
def mappings(pid):
    """The mappings of /proc/PID/smaps: (lo, hi, perms, path, rss KiB)."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                lo, hi = [int(x, 16) for x in parts[0].split("-")]
                maps.append([lo, hi, parts[1], parts[5] if len(parts) > 5 else "", 0])
            elif line.startswith("Rss:"):
                maps[-1][4] = int(line.split()[1])
    return maps
def kinds(maps):
    """The kind of each mapping. A SQLite connection's Wasm memory is
    reserved whole (256 MB) when it is made and committed as it grows, the
    -shm's regions mapped into it: a run of adjacent mappings that ends with
    the reserved rest (---p), 128 MB or more in all. The Go runtime's heap
    arenas are anonymous mappings far below the shared libraries' (under
    0x7e0000000000 here, above the program and its brk heap)."""
    ks = [None] * len(maps)
    i = 0
    while i < len(maps):
        j = i
        while j + 1 < len(maps) and maps[j + 1][0] == maps[j][1] and maps[j][2] != "---p":
            j += 1
        if maps[j][2] == "---p" and maps[j][1] - maps[i][0] >= 128 << 20 and not maps[i][3]:
            for k in range(i, j + 1):
                ks[k] = "shm" if maps[k][3].endswith("-shm") else ("wasm", i)
            i = j + 1
            continue
        i += 1
    for i, (lo, hi, perms, path, _) in enumerate(maps):
        if ks[i] is not None: continue
        if path.endswith("-shm"): ks[i] = "shm"
        elif path == binpath or path.endswith("cspool"):
            ks[i] = {"r-xp": "bin_text", "r--p": "bin_ro"}.get(perms, "bin_rw")
        elif path: ks[i] = "otherfile"
        elif 1 << 32 <= lo < 0x7e0000000000: ks[i] = "goheap"
        else: ks[i] = "anon_small"
    return ks
def smaps(pid, maps):
    cats = {}
    for k, m in zip(kinds(maps), maps):
        if isinstance(k, tuple): k = "wasm"
        if k.startswith("bin_"):
            cats["binary"] = cats.get("binary", 0) + m[4]
        cats[k] = cats.get(k, 0) + m[4]
    return {k: round(v / 1024, 1) for k, v in cats.items()}
def wasm_regions(maps):
    regs = {}
    for k, m in zip(kinds(maps), maps):
        if isinstance(k, tuple): regs[k[1]] = regs.get(k[1], 0) + m[4]
    return [round(v / 1024, 1) for v in regs.values()]
gostats_on = os.environ.get("GOSTATS", "1") != "0"
interval = float(os.environ.get("INTERVAL", "2"))
def gostats():
    if not gostats_on:
        return {}
    try:
        t = urllib.request.urlopen(f"http://127.0.0.1:{pport}/debug/pprof/heap?debug=1", timeout=5).read().decode()
    except Exception:
        return {}
    d = {}
    for k in ("HeapAlloc", "HeapSys", "HeapInuse", "HeapIdle", "HeapReleased", "NextGC", "Sys", "StackInuse"):
        m = re.search(rf"# {k} = (\d+)", t)
        if m: d[k] = round(int(m.group(1)) / 2**20, 1)
    return d
binpath = None
def status_kb(st, k):
    m = re.search(rf"{k}:\s+(\d+)", st)
    return round(int(m.group(1)) / 1024, 1) if m else None
def keep_peak(p):
    try:
        with open(f"/proc/{p}/smaps") as f, open(out + ".peak-smaps", "w") as g:
            g.write(f.read())
        if not gostats_on:
            return
        prof = urllib.request.urlopen(f"http://127.0.0.1:{pport}/debug/pprof/heap", timeout=5).read()
        with open(out + ".peak-heap", "wb") as g:
            g.write(prof)
    except Exception:
        pass
peak = 0
with open(out, "a") as o:
    pid = None
    end = time.time() + 4 * 3600
    while time.time() < end:
        p = findpid()
        if p is None:
            time.sleep(1); continue
        try:
            if binpath is None:
                binpath = os.readlink(f"/proc/{p}/exe")
            st = open(f"/proc/{p}/status").read()
            maps = mappings(p)
            rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1)) // 1024
            hwm = int(re.search(r"VmHWM:\s+(\d+)", st).group(1)) // 1024
            rec = {"t": time.strftime("%H:%M:%S"), "ts": round(time.time(), 1), "pid": p, "rss": rss, "hwm": hwm, "smaps": smaps(p, maps), "wasm": wasm_regions(maps), "go": gostats(), "load": open("/proc/loadavg").read().split()[0],
                   "anon": status_kb(st, "RssAnon"), "file": status_kb(st, "RssFile"), "shmem": status_kb(st, "RssShmem")}
        except Exception as e:
            time.sleep(1); continue
        o.write(json.dumps(rec) + "\n"); o.flush()
        if rss > peak:
            peak = rss
            keep_peak(p)
        time.sleep(interval)
