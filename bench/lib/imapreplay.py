#!/usr/bin/env python3
"""Python's imaplib reading a recorded FETCH answer from a server that has
it ready: the client's own time, the floor of any server's wall clock as
imaplib measures it.

  imapreplay.py RUNS FILE...

Each FILE is one server's whole answer to one FETCH command, its untagged
lines and the tagged line last (as bench/fetchreads.sh bytes records
them). A server on 127.0.0.1 answers imaplib's CAPABILITY, LOGIN and EXAMINE, and
each FETCH with FILE, the tag made imaplib's; RUNS FETCHes per FILE, the
files taking turns. Prints per FILE the best and the median in seconds
and the responses imaplib returned.
"""
import imaplib
import socket
import sys
import threading
import time


def serve(lst, answers):
    conn, _ = lst.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = conn.makefile("rb")
    conn.sendall(b"* OK ready\r\n")
    while True:
        line = f.readline()
        if not line:
            return
        tag, cmd = line.rstrip(b"\r\n").split(b" ", 2)[:2]
        cmd = cmd.upper()
        if cmd == b"CAPABILITY":
            conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK CAPABILITY done\r\n")
        elif cmd == b"LOGIN":
            conn.sendall(tag + b" OK LOGIN done\r\n")
        elif cmd == b"EXAMINE":
            conn.sendall(b"* 0 EXISTS\r\n" + tag + b" OK [READ-ONLY] EXAMINE done\r\n")
        elif cmd == b"FETCH":
            body = answers.pop(0)
            conn.sendall(body + tag + b" OK FETCH done\r\n")
        elif cmd == b"LOGOUT":
            conn.sendall(b"* BYE\r\n" + tag + b" OK LOGOUT done\r\n")
            return
        else:
            conn.sendall(tag + b" BAD unknown\r\n")


def main():
    runs, files = int(sys.argv[1]), sys.argv[2:]
    bodies = []
    for name in files:
        data = open(name, "rb").read()
        # The answer less its tagged line.
        bodies.append(data[:data.rstrip(b"\r\n").rfind(b"\r\n") + 2])
    order = [i for _ in range(runs) for i in range(len(files))]
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    answers = [bodies[i] for i in order]
    t = threading.Thread(target=serve, args=(lst, answers), daemon=True)
    t.start()
    m = imaplib.IMAP4("127.0.0.1", lst.getsockname()[1])
    m.login("u", "p")
    m.select("INBOX", readonly=True)
    times = {i: [] for i in range(len(files))}
    got = {}
    for i in order:
        t0 = time.perf_counter()
        typ, data = m.fetch("1:*", "(X)")
        times[i].append(time.perf_counter() - t0)
        got[i] = sum(1 for d in data if isinstance(d, (bytes, tuple)) and d != b")")
    m.logout()
    for i, name in enumerate(files):
        ts = sorted(times[i])
        print(f"{name}: imaplib best {ts[0]:.4f} s, median {ts[len(ts) // 2]:.4f} s over {runs}, {got[i]} responses, {len(bodies[i])} bytes")


if __name__ == "__main__":
    main()
