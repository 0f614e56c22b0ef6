#!/usr/bin/env python3
"""Reads `go test -json` on stdin and prints what `go test` prints without
-v (each package's ok/FAIL line, and the whole output of every failed test
and failed package), then the slowest tests and packages.

Usage: go test -json ./... | python3 .ci/gotest-report.py [N]
Exits 0; the caller takes go test's own exit status.
"""
import json
import re
import sys

# "    file_test.go:123: text": a line a test wrote.
OWN = re.compile(r"^\s+[\w.-]+\.go:\d+: ")

top = int(sys.argv[1]) if len(sys.argv) > 1 else 20
out = {}  # (package, test or "") -> output lines
tests = []  # (seconds, package, test, action)
failed = []  # (package, test, output lines) of every failed test
packages = []  # (seconds, package, action)

def raceReports(lines):
    """The race detector's reports among lines: each from the rule of =
    before its WARNING: DATA RACE to the rule after it."""
    keep, inside = [], False
    for i, l in enumerate(lines):
        if not inside and l.startswith("WARNING: DATA RACE"):
            inside = True
            if i > 0 and lines[i - 1].startswith("=================="):
                keep.append(lines[i - 1])
        if inside:
            keep.append(l)
            if l.startswith("==================") and len(keep) > 1:
                inside = False
    return keep


for line in sys.stdin:
    try:
        ev = json.loads(line)
    except ValueError:
        # Not an event (a build error printed by go itself): pass it on.
        sys.stdout.write(line)
        continue
    pkg = ev.get("Package", "")
    test = ev.get("Test", "")
    action = ev.get("Action")
    key = (pkg, test)
    if action == "build-output":
        sys.stdout.write(ev.get("Output", ""))
        continue
    if action == "output":
        out.setdefault(key, []).append(ev.get("Output", ""))
        continue
    if action not in ("pass", "fail", "skip"):
        continue
    elapsed = ev.get("Elapsed", 0.0)
    lines = out.pop(key, [])
    if action != "fail" and any("WARNING: DATA RACE" in l for l in lines):
        # The race detector's report goes to whichever test go test -json
        # names as running then, which beside parallel tests need not be
        # the one it fails: show it wherever it lands.
        sys.stdout.write("--- a race report printed while %s %s ran (it may belong to a test beside it):\n" % (pkg, test or "(package)"))
        sys.stdout.write("".join(raceReports(lines)))
    if test:
        if action == "fail":
            sys.stdout.write("".join(lines))
            failed.append((pkg, test, lines))
        elif action == "pass" and "/" not in test:
            tests.append((elapsed, pkg, test))
        continue
    # The package's end: its own output holds the ok/FAIL/? line, and on a
    # failure what no test owned (a panic, a timeout, a build error).
    for l in lines:
        if action == "fail" or l.startswith(("ok ", "ok\t", "FAIL", "?")):
            sys.stdout.write(l)
    packages.append((elapsed, pkg))
    sys.stdout.flush()

# Output of tests that never ended (the binary died): show it.
for (pkg, test), lines in out.items():
    if test and lines:
        sys.stdout.write("--- %s %s did not finish; its output:\n" % (pkg, test))
        sys.stdout.write("".join(lines))

tests.sort(reverse=True)
packages.sort(reverse=True)
print("slowest tests:")
for elapsed, pkg, test in tests[:top]:
    print("  %8.1fs  %s %s" % (elapsed, pkg, test))
print("slowest packages:")
for elapsed, pkg in packages[:10]:
    print("  %8.1fs  %s" % (elapsed, pkg))


def said(line):
    """A line the test itself wrote (t.Error, t.Fatal, t.Log), not a line
    of a subprocess's log that a test dumps when it fails."""
    m = OWN.match(line)
    return (m is not None and " level=" not in line and " time=20" not in line
            and "stderr, last" not in line)


# The failures again, in short, last: a failed test's output can be long
# (the logs of the processes it ran), and the end of the output is what
# a reader sees first.
if failed:
    print("failures, in short (the test's own lines, up to 12 each):")
    for pkg, test, lines in failed:
        mine = [l.rstrip("\n") for l in lines if said(l)]
        print("  %s %s" % (pkg, test))
        for l in mine[:12]:
            print("    " + l.strip()[:400])
        if len(mine) > 12:
            print("    ... %d more" % (len(mine) - 12))
