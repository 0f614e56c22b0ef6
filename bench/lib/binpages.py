#!/usr/bin/env python3
"""binpages.py PID [TOP]: which of a running Go program's own pages are resident.

Reads /proc/PID/maps for the mappings of the program's file, /proc/PID/pagemap
for which of their pages are resident in the process (bit 63), and `go tool
nm -size` of the file for what each page holds; prints the resident MB by
section (code, read-only data, the functions' tables, data) and the TOP
(default 15) packages by resident code. A page shared by two symbols counts
for the first. Root (or the process's owner) can read pagemap:

  python3 bench/lib/binpages.py $(pgrep -n cspool) 20
"""
import bisect, os, re, struct, subprocess, sys

pid = int(sys.argv[1])
top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
exe = os.readlink(f"/proc/{pid}/exe")
PAGE = os.sysconf("SC_PAGE_SIZE")

maps = []
for line in open(f"/proc/{pid}/maps"):
    parts = line.split()
    if len(parts) >= 6 and parts[5] == exe:
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        maps.append((lo, hi, parts[1]))

resident = []
with open(f"/proc/{pid}/pagemap", "rb") as pm:
    for lo, hi, perms in maps:
        n = (hi - lo) // PAGE
        pm.seek(lo // PAGE * 8)
        data = pm.read(n * 8)
        for i in range(n):
            (v,) = struct.unpack_from("<Q", data, i * 8)
            if v >> 63 & 1:
                resident.append(lo + i * PAGE)

syms = []
out = subprocess.run(["go", "tool", "nm", "-size", "-sort", "address", exe], capture_output=True, text=True, check=True).stdout
for line in out.splitlines():
    f = line.split(None, 3)
    if len(f) < 4:
        continue
    try:
        addr, size = int(f[0], 16), int(f[1])
    except ValueError:
        continue
    syms.append((addr, size, f[2], f[3]))
syms.sort()
addrs = [s[0] for s in syms]


def package(name):
    name = re.sub(r"^(go:|type:)", "", name)
    m = re.match(r"^((?:[^/]*/)*[^.]*)", name)
    return m.group(1) if m else name


def section(kind, name):
    if kind in "Tt":
        return "code"
    if name.startswith("runtime.pclntab") or name in ("runtime.findfunctab", "runtime.functab", "runtime.filetab", "runtime.pctab", "runtime.cutab", "runtime.funcnametab") or name.startswith("go:func."):
        return "functions' tables"
    if kind in "Rr":
        return "read-only data"
    return "data"


bysec, bypkg = {}, {}
for a in resident:
    i = bisect.bisect_right(addrs, a + PAGE - 1) - 1
    # the first symbol that overlaps the page
    j = bisect.bisect_right(addrs, a) - 1
    k = j if j >= 0 and syms[j][0] + max(syms[j][1], 1) > a else i
    if k < 0:
        sec, pkg = "other", "?"
    else:
        addr, size, kind, name = syms[k]
        sec, pkg = section(kind, name), package(name)
    bysec[sec] = bysec.get(sec, 0) + PAGE
    if sec == "code":
        bypkg[pkg] = bypkg.get(pkg, 0) + PAGE

mb = lambda b: b / 2**20
total = sum(bysec.values())
print(f"{exe}: {mb(total):.1f} MB of its pages resident in process {pid} (" +
      ", ".join(f"{k} {mb(v):.1f}" for k, v in sorted(bysec.items(), key=lambda kv: -kv[1])) + ")")
for pkg, b in sorted(bypkg.items(), key=lambda kv: -kv[1])[:top]:
    print(f"  code {mb(b):6.1f} MB  {pkg}")
