#!/usr/bin/env python3
"""IMAP timings with Python's imaplib, the same client against every peer.

  imapbench.py waitcount HOST PORT USER PASS N TIMEOUT [READY]   wait until INBOX has N messages; with READY, a
                                                          file made once the client has started (Python and its
                                                          imports), so that a caller starts its clock after it,
                                                          and the STATUS asked every 10 ms instead of 50;
                                                          "reached_at" is when STATUS first showed N (Unix time)
  imapbench.py fetch HOST PORT USER PASS WORD [RUNS]     time FETCH 1:* (ENVELOPE FLAGS) (the median of RUNS) and SEARCH BODY WORD
  imapbench.py search HOST PORT USER PASS RUNS CRIT...   time SEARCH CRIT..., RUNS times: the median, the first, the hits
  imapbench.py reads HOST PORT USER PASS RUNS ITEMS      time FETCH 1:* ITEMS on one connection, 1+RUNS times: the first
                                                          (cold, if the server was just started), the best and the
                                                          median of the RUNS after it (warm), the messages answered
  imapbench.py pair HOST PORT1 PORT2 USER PASS RUNS ITEMS reads on two servers at once, one connection each: the first
                                                          FETCH on each (cold), then RUNS rounds of one FETCH on each,
                                                          taking turns (which goes first alternates), so that a burst
                                                          of load elsewhere on the machine falls on both; one JSON
                                                          object per server, a line each
  imapbench.py sockpair HOST PORT1 PORT2 USER PASS RUNS ITEMS   the same with bigbox.py's plain socket client, which
                                                          reads to the tagged answer and counts the lines: the
                                                          servers' time, without imaplib's parsing of each response
  imapbench.py trio HOST PORT1 PORT2 PORT3 USER PASS RUNS ITEMS   imaplib's FETCH 1:* ITEMS on three servers (two builds
                                                          of cspool and Dovecot), one connection each: one untimed
                                                          FETCH on each, then RUNS rounds of one on each, the order
                                                          rotating; per server the median and the best, and the
                                                          medians of the rounds' ratios (the second to the first,
                                                          each cspool to the third), one JSON object
  imapbench.py arrival HOST PORT USER PASS RUNS ITEMS     when FETCH 1:* ITEMS's answer arrives, read by a plain
                                                          socket (no parsing): the medians over RUNS of the first
                                                          byte, half the bytes and the last, in milliseconds
  imapbench.py during HOST PORT USER PASS DELAY N TIMEOUT DELAY seconds after it starts (a device bootstrapping
                                                          meanwhile), APPEND a message to INBOX and STORE +FLAGS
                                                          (\\Flagged) on it, each timed, with INBOX's count before;
                                                          then wait until INBOX has N+1 messages and, every 10 s
                                                          for a minute, count them, those with its Subject and
                                                          those \\Flagged

Prints one JSON object.
"""
import imaplib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bigbox  # noqa: E402


def login(host, port, user, pw):
    deadline = time.time() + 30
    while True:
        try:
            m = imaplib.IMAP4(host, int(port))
            m.login(user, pw)
            return m
        except (ConnectionRefusedError, OSError):
            if time.time() > deadline:
                raise
            time.sleep(0.01)


def waitcount(host, port, user, pw, n, timeout, ready=None):
    start = time.time()
    pause = 0.05
    if ready is not None:
        open(ready, "w").close()
        pause = 0.01
    m = login(host, port, user, pw)
    count, reached = 0, None
    while time.time() - start < float(timeout):
        typ, data = m.status("INBOX", "(MESSAGES)")
        if typ == "OK":
            count = int(data[0].split(b"MESSAGES ")[1].rstrip(b")"))
            if count >= int(n):
                reached = time.time()
                break
        time.sleep(pause)
    m.logout()
    return {"messages": count, "seconds": round(time.time() - start, 3), "reached_at": reached}


def fetch(host, port, user, pw, word, runs="1"):
    m = login(host, port, user, pw)
    typ, data = m.select("INBOX", readonly=True)
    n = int(data[-1])
    times = []
    for _ in range(int(runs)):
        t0 = time.time()
        typ, data = m.fetch("1:*", "(ENVELOPE FLAGS)")
        times.append(time.time() - t0)
    times.sort()
    fetch_s = times[len(times) // 2]
    fetched = sum(1 for d in data if isinstance(d, bytes) and b"ENVELOPE" in d)
    t1 = time.time()
    typ, sdata = m.search(None, "BODY", word)
    t2 = time.time()
    hits = len(sdata[0].split()) if sdata and sdata[0] else 0
    m.logout()
    return {"messages": n, "fetched": fetched, "fetch_seconds": round(fetch_s, 3),
            "search_hits": hits, "search_seconds": round(t2 - t1, 3)}


def search(host, port, user, pw, runs, *crit):
    m = login(host, port, user, pw)
    m.select("INBOX", readonly=True)
    times, hits = [], 0
    for _ in range(int(runs)):
        t0 = time.time()
        typ, data = m.search(None, *crit)
        times.append(time.time() - t0)
        if typ != "OK":
            raise SystemExit("search: %r" % (data,))
        hits = len(data[0].split()) if data and data[0] else 0
    m.logout()
    first = times[0]
    times.sort()
    return {"median_ms": round(1000 * times[len(times) // 2], 1), "first_ms": round(1000 * first, 1), "hits": hits}


def reads(host, port, user, pw, runs, items):
    m = login(host, port, user, pw)
    typ, data = m.select("INBOX", readonly=True)
    n = int(data[-1])
    times, answered = [], 0
    for _ in range(1 + int(runs)):
        t0 = time.time()
        typ, data = m.fetch("1:*", items)
        times.append(time.time() - t0)
        if typ != "OK":
            raise SystemExit("fetch %s: %r" % (items, data[:1]))
        answered = sum(1 for d in data if isinstance(d, (bytes, tuple)) and d != b")")
        data = None
    m.logout()
    warm = sorted(times[1:])
    return {"items": items, "messages": n, "answered": answered, "cold_seconds": round(times[0], 4),
            "warm_seconds": round(warm[0], 4), "warm_median_seconds": round(warm[len(warm) // 2], 4)}


def turns(conns, runs, items, one, logout):
    """The first FETCH on each connection (cold), then runs rounds of one
    on each, which goes first alternating; the figures of each."""
    for c in conns:
        one(c)
    for i in range(int(runs)):
        for c in (conns if i % 2 == 0 else conns[::-1]):
            one(c)
    out = []
    for c in conns:
        logout(c)
        warm = sorted(c["times"][1:])
        out.append({"items": items, "messages": c["n"], "answered": c["answered"], "cold_seconds": round(c["times"][0], 4),
                    "warm_seconds": round(warm[0], 4), "warm_median_seconds": round(warm[len(warm) // 2], 4)})
    return out


def pair(host, port1, port2, user, pw, runs, items):
    conns = []
    for port in (port1, port2):
        m = login(host, port, user, pw)
        typ, data = m.select("INBOX", readonly=True)
        conns.append({"m": m, "n": int(data[-1]), "times": [], "answered": 0})

    def one(c):
        t0 = time.time()
        typ, data = c["m"].fetch("1:*", items)
        c["times"].append(time.time() - t0)
        if typ != "OK":
            raise SystemExit("fetch %s: %r" % (items, data[:1]))
        c["answered"] = sum(1 for d in data if isinstance(d, (bytes, tuple)) and d != b")")

    return turns(conns, runs, items, one, lambda c: c["m"].logout())


def sockpair(host, port1, port2, user, pw, runs, items):
    conns = []
    for port in (port1, port2):
        c = bigbox.Conn(host, port)
        c.cmd("LOGIN %s %s" % (user, pw))
        _, _, head = c.cmd("STATUS INBOX (MESSAGES)")
        n = int(head[0].rsplit(b" ", 1)[1].rstrip(b")"))
        c.cmd("EXAMINE INBOX")
        conns.append({"c": c, "n": n, "times": [], "answered": 0})

    def one(c):
        dt, _, _ = c["c"].cmd("FETCH 1:* " + items)
        c["times"].append(dt)
        c["answered"] = c["c"].untagged

    return turns(conns, runs, items, one, lambda c: c["c"].cmd("LOGOUT"))


def trio(host, port1, port2, port3, user, pw, runs, items):
    conns = []
    for port in (port1, port2, port3):
        m = login(host, port, user, pw)
        m.select("INBOX", readonly=True)
        conns.append(m)

    def one(m):
        t0 = time.perf_counter()
        typ, data = m.fetch("1:*", items)
        dt = time.perf_counter() - t0
        if typ != "OK":
            raise SystemExit("fetch %s: %r" % (items, data[:1]))
        return dt

    for m in conns:
        one(m)
    times = [[], [], []]
    for i in range(int(runs)):
        for k in range(3):
            j = (i + k) % 3
            times[j].append(one(conns[j]))
    for m in conns:
        m.logout()

    def med(x):
        return sorted(x)[len(x) // 2]

    return {"items": items, "rounds": int(runs),
            "median_ms": [round(1000 * med(t), 2) for t in times], "best_ms": [round(1000 * min(t), 2) for t in times],
            "second_to_first": round(med([b / a for a, b in zip(times[0], times[1])]), 3),
            "first_to_third": round(med([a / c for a, c in zip(times[0], times[2])]), 3),
            "second_to_third": round(med([b / c for b, c in zip(times[1], times[2])]), 3)}


def arrival(host, port, user, pw, runs, items):
    c = bigbox.Conn(host, port)
    c.cmd("LOGIN %s %s" % (user, pw))
    c.cmd("EXAMINE INBOX")
    c.cmd("FETCH 1:* " + items)
    first, half, last = [], [], []
    for i in range(int(runs)):
        tag = b"r%d " % i
        end = b"\r\n" + tag
        t0 = time.perf_counter()
        c.s.sendall(tag + b"FETCH 1:* " + items.encode() + b"\r\n")
        marks, got, tail = [], 0, b""
        while True:
            d = c.recv()
            got += len(d)
            marks.append((time.perf_counter() - t0, got))
            tail = (tail + d)[-256:]
            if end in tail and tail.endswith(b"\r\n"):
                break
        first.append(marks[0][0])
        half.append(next(t for t, g in marks if g >= got / 2))
        last.append(marks[-1][0])
    c.cmd("LOGOUT")

    def med(x):
        return round(1000 * sorted(x)[len(x) // 2], 2)

    return {"items": items, "runs": int(runs), "first_byte_ms": med(first), "half_ms": med(half), "last_ms": med(last)}


def during(host, port, user, pw, delay, n, timeout):
    start = time.time()
    m = login(host, port, user, pw)
    time.sleep(max(0.0, float(delay) - (time.time() - start)))
    typ, data = m.status("INBOX", "(MESSAGES)")
    before = int(data[0].split(b"MESSAGES ")[1].rstrip(b")"))
    subject = "cspool bench: made during the bootstrap %d" % int(start)
    body = ("From: bench@example.org\r\nSubject: %s\r\n\r\nappended while the device restores\r\n" % subject).encode()
    t0 = time.time()
    typ, data = m.append("INBOX", None, None, body)
    t1 = time.time()
    out = {"messages_before": before, "append_started_s": round(t0 - start, 3), "append_seconds": round(t1 - t0, 3),
           "append_answer": typ + " " + (data[0] or b"").decode(errors="replace")}
    m.select("INBOX")
    if typ == "OK":
        uid = data[0].split(b"APPENDUID ")[1].split(b" ")[1].rstrip(b"]").decode()
    else:
        # The message shows once the device applies it: wait for it.
        while True:
            typ, hits = m.uid("SEARCH", "SUBJECT", '"%s"' % subject)
            if hits and hits[0]:
                uid = hits[0].split()[0].decode()
                break
            if time.time() - start > float(timeout):
                raise SystemExit("the appended message never showed")
            time.sleep(0.5)
            m.noop()
    t2 = time.time()
    typ, data = m.uid("STORE", uid, "+FLAGS", "(\\Flagged)")
    t3 = time.time()
    out.update({"store_started_s": round(t2 - start, 3), "store_seconds": round(t3 - t2, 3),
                "store_answer": typ + " " + (data[0] or b"").decode(errors="replace")[:80]})
    m.logout()
    r = waitcount(host, port, user, pw, int(n) + 1, timeout)
    out.update({"restored_s": round(r["reached_at"] - start, 3) if r["reached_at"] else None})
    # Then, every 10 s for a minute, on a new connection each time: the
    # count, the messages with its Subject and those \Flagged (the
    # device applies what the log holds after the checkpoint meanwhile).
    # A figure is the answer's text when the command did not answer OK (a
    # NO's words are not hits); a SELECT's count is its last EXISTS.
    def hits(typ, data):
        if typ != "OK":
            return typ + " " + b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")
        return len(data[0].split()) if data and data[0] else 0

    checks = []
    for _ in range(7):
        c = login(host, port, user, pw)
        typ, data = c.select("INBOX", readonly=True)
        exists = int(data[-1]) if typ == "OK" else typ + " " + (data[0] or b"").decode(errors="replace")
        subj = hits(*c.search(None, "SUBJECT", '"%s"' % subject))
        flagged = hits(*c.search(None, "FLAGGED"))
        c.logout()
        checks.append([exists, subj, flagged])
        time.sleep(10)
    out["after_messages_subject_flagged"] = checks
    return out


if __name__ == "__main__":
    if sys.argv[1] in ("pair", "sockpair"):
        for r in {"pair": pair, "sockpair": sockpair}[sys.argv[1]](*sys.argv[2:]):
            print(json.dumps(r))
        sys.exit(0)
    cmd, args = sys.argv[1], sys.argv[2:]
    out = {"waitcount": waitcount, "fetch": fetch, "search": search, "reads": reads, "during": during,
           "trio": trio, "arrival": arrival}[cmd](*args)
    print(json.dumps(out))
