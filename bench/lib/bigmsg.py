#!/usr/bin/env python3
"""bigmsg.py LMTP_PORT IMAP_PORT PASSWORD SERVER_PID DAEMON_PID MB [SETTLE]:
one large message through cspool as a user would, with both processes' memory
sampled all along.

Mails one message of about MB megabytes (a short text part and an attachment
of random bytes, base64) over LMTP with smtplib, waits until the device's
INBOX has it (imaplib STATUS), SETTLE seconds (default 40) sampling, then
FETCHes it whole (BODY.PEEK[]) with imaplib, checks its size, and samples
SETTLE seconds more. Every 0.2 s it reads VmRSS and VmHWM of both processes
from /proc/PID/status. Prints the timeline (one line a second) and a summary:
RSS at idle before, the high-water marks after the apply and after the FETCH,
and RSS 1, 5, 10 and SETTLE seconds after each. Bounded: each wait gives up
after 300 s.
"""
import base64
import imaplib
import os
import smtplib
import sys
import threading
import time

lport, iport, pw, spid, dpid, mb = sys.argv[1:7]
settle = float(sys.argv[7]) if len(sys.argv) > 7 else 40.0
mb = float(mb)
samples = []  # (t, server rss, server hwm, daemon rss, daemon hwm), MB
marks = []
stop = threading.Event()


def status(pid):
    rss = hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def sample():
    while not stop.is_set():
        s, d = status(spid), status(dpid)
        samples.append((time.time(), s[0], s[1], d[0], d[1]))
        stop.wait(0.2)


def mark(what):
    marks.append((time.time(), what))


def message():
    raw = os.urandom(int(mb * 1e6 * 3 / 4))
    b = base64.encodebytes(raw)  # lines of 76 characters
    head = (b"From: bench <bench@example.org>\r\nTo: alice@localhost\r\n"
            b"Subject: large attachment\r\nMessage-ID: <bigmsg-%d@example.org>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\nThe attachment is random bytes.\r\n"
            b"--b1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"random.bin\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n") % int(time.time())
    return head + b.replace(b"\n", b"\r\n") + b"--b1--\r\n"


def profile(name):
    """With PPROF=PORT[,PORT] and PROFDIR in the environment, keep each
    process's allocations so far (/debug/pprof/allocs) as PROFDIR-NAME-I.allocs."""
    if not os.environ.get("PPROF"):
        return
    import urllib.request
    for i, port in enumerate(os.environ["PPROF"].split(",")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/pprof/allocs") as r:
            open(f"{os.environ['PROFDIR']}-{name}-{i}.allocs", "wb").write(r.read())


def login():
    m = imaplib.IMAP4("127.0.0.1", int(iport))
    m.login("alice", pw)
    return m


def count(m):
    typ, d = m.status("INBOX", "(MESSAGES)")
    return int(d[0].split(b"MESSAGES ")[1].rstrip(b")"))


msg = message()
th = threading.Thread(target=sample, daemon=True)
th.start()
m = login()
before = count(m)
time.sleep(2)
profile("before")
mark("deliver")
lm = smtplib.LMTP("127.0.0.1", int(lport))
lm.sendmail("bench@example.org", ["alice@localhost"], msg)
lm.quit()
mark("delivered")
deadline = time.time() + 300
while count(m) <= before:
    if time.time() > deadline:
        sys.exit("the message did not reach INBOX in 300 s")
    time.sleep(0.05)
mark("in INBOX")
time.sleep(settle)
profile("applied")
m.select("INBOX", readonly=True)
mark("fetch")
typ, d = m.fetch(str(before + 1), "(BODY.PEEK[])")
got = len(d[0][1])
mark("fetched")
m.logout()
time.sleep(settle)
profile("fetched")
stop.set()
th.join()
t0 = samples[0][0]
print(f"message {len(msg)} bytes; fetched {got} bytes")
for t, w in marks:
    print(f"mark {t - t0:7.2f} s {w}")
last = -1
for t, sr, sh, dr, dh in samples:
    if int(t - t0) != last:
        last = int(t - t0)
        print(f"t {t - t0:7.2f} server rss {sr:6.1f} hwm {sh:6.1f}  daemon rss {dr:6.1f} hwm {dh:6.1f}")


def at(t):
    return min(samples, key=lambda s: abs(s[0] - t))


tm = dict((w, t) for t, w in marks)
idle = at(tm["deliver"])
print(f"summary: idle server {idle[1]:.1f} MB, daemon {idle[3]:.1f} MB")
for phase, start, end in (("apply", "deliver", "fetch"), ("fetch", "fetch", None)):
    t1 = tm[start]
    t2 = tm[end] if end else samples[-1][0]
    ph = [s for s in samples if t1 <= s[0] <= t2]
    sp = max(s[1] for s in ph)
    dp = max(s[3] for s in ph)
    settled = tm["in INBOX"] if phase == "apply" else tm["fetched"]
    after = " ".join(f"+{k}s {at(settled + k)[3]:.1f}" for k in (1, 5, 10, settle))
    print(f"summary: {phase}: peak RSS sampled server {sp:.1f} MB, daemon {dp:.1f} MB "
          f"(daemon VmHWM {ph[-1][4]:.1f}, server VmHWM {ph[-1][2]:.1f}); daemon RSS after it: {after}")
