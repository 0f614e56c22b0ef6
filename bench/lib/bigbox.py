#!/usr/bin/env python3
"""Query times over one large mailbox, with a plain socket client that only
counts what it reads (imaplib's parsing of a million responses would take
longer than the servers' answers), the same client against every peer.

  bigbox.py HOST PORT USER PASS RUNS MSGID [QUERIES]

One connection: LOGIN, then RUNS+1 times each (the first is cold if the
server was just started): SELECT INBOX, UID FETCH 1:* (FLAGS), SEARCH HEADER
Message-ID MSGID, and once a full FETCH 1:* (ENVELOPE FLAGS). Prints one
JSON object: per query the first, the best and the median of the RUNS after
it in seconds, and what it answered (messages, FETCH lines, SEARCH hits).
"""
import json
import socket
import sys
import time


class Conn:
    def __init__(self, host, port):
        deadline = time.time() + 30
        while True:
            try:
                self.s = socket.create_connection((host, int(port)))
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.n = 0
        self.line()  # greeting

    def line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.recv()
        i = self.buf.index(b"\r\n")
        line, self.buf = self.buf[:i], self.buf[i + 2:]
        return line

    def recv(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise SystemExit("connection closed")
        return d

    def cmd(self, text):
        """Sends text and reads to its tagged answer; returns the seconds,
        the untagged lines and the first of them."""
        self.n += 1
        tag = b"b%d " % self.n
        end = b"\r\n" + tag
        t0 = time.perf_counter()
        self.s.sendall(tag + text.encode() + b"\r\n")
        buf = bytearray(b"\r\n")
        buf += self.buf
        pos = 0
        while True:
            j = buf.find(end, pos)
            if j >= 0:
                k = buf.find(b"\r\n", j + 2)
                if k >= 0:
                    break
                pos = j
            else:
                pos = max(0, len(buf) - len(end))
            buf += self.recv()
        dt = time.perf_counter() - t0
        tagged, self.buf = bytes(buf[j + 2:k]), bytes(buf[k + 2:])
        body = buf[2:j + 2]
        self.untagged = buf[:j + 2].count(b"\r\n* ")
        if tagged.split(b" ")[1:2] != [b"OK"]:
            raise SystemExit("%s: %r" % (text, tagged))
        return dt, body.count(b"\r\n"), bytes(body[:400]).split(b"\r\n")[:3]


def series(c, runs, text):
    times, lines, head = [], 0, []
    for _ in range(1 + runs):
        dt, lines, head = c.cmd(text)
        times.append(dt)
    warm = sorted(times[1:]) or times
    return {"first": round(times[0], 4), "best": round(warm[0], 4),
            "median": round(warm[len(warm) // 2], 4), "lines": lines,
            "head": [h.decode(errors="replace")[:80] for h in head]}


QUERIES = {
    "select": "SELECT INBOX",
    "uid_fetch_flags": "UID FETCH 1:* (FLAGS)",
    "search_msgid": 'SEARCH HEADER Message-ID "%s"',
    "fetch_envelope_flags": "FETCH 1:* (ENVELOPE FLAGS)",
}


def main(host, port, user, pw, runs, msgid, queries=",".join(QUERIES)):
    runs = int(runs)
    c = Conn(host, port)
    c.cmd("LOGIN %s %s" % (user, pw))
    out = {"load": open("/proc/loadavg").read().split()[:3]}
    names = queries.split(",")
    if "select" not in names:
        c.cmd("SELECT INBOX")
    try:
        for q in names:
            text = QUERIES[q] % msgid if "%s" in QUERIES[q] else QUERIES[q]
            if q == "fetch_envelope_flags":
                dt, lines, _ = c.cmd(text)
                out[q] = {"first": round(dt, 4), "lines": lines}
            else:
                out[q] = series(c, runs, text)
        c.cmd("LOGOUT")
    except (SystemExit, OSError) as e:
        out["failed"] = "%s: %s" % (q, e)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
