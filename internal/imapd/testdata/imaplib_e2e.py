"""End-to-end check of the IMAP server with Python's imaplib.

Usage: imaplib_e2e.py HOST PORT USER PASSWORD DELIVERED_FILE

Prints "IDLING" when its raw-socket IDLE is ready and waits for a line on
stdin before expecting the EXISTS of a new delivery. Exits non-zero with a
message on the first failure.
"""
import imaplib
import socket
import sys

imaplib.Commands.setdefault("MOVE", ("SELECTED",))


def check(cond, what):
    if not cond:
        print("FAIL: " + what, file=sys.stderr)
        sys.exit(1)


def ok(resp, what):
    typ, data = resp
    check(typ == "OK", "%s: %s %r" % (what, typ, data))
    return data


host, port, user, password, delivered = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
with open(delivered, "rb") as f:
    want = f.read()

c = imaplib.IMAP4(host, port)
ok(c.login(user, password), "LOGIN")
names = b"\n".join(ok(c.list(), "LIST"))
check(b"\\Trash" in names and b"INBOX" in names, "LIST lacks INBOX or \\Trash: %r" % names)
data = ok(c.select("INBOX"), "SELECT")
check(data == [b"3"], "SELECT INBOX: %r messages" % data)

data = ok(c.fetch("1", "(UID RFC822.SIZE BODY.PEEK[])"), "FETCH")
check(data[0][1] == want, "FETCH 1 BODY[] differs from the delivered message")
check(b"RFC822.SIZE %d" % len(want) in data[0][0], "RFC822.SIZE: %r" % data[0][0])

data = ok(c.store("1", "+FLAGS", "(\\Flagged $Important)"), "STORE")
check(b"\\Flagged" in data[0] and b"$Important" in data[0], "STORE reply %r" % data)
typ, data = c.copy("1", "Archive")
check(typ == "OK", "COPY: %r" % data)
data = ok(c.search(None, "FLAGGED"), "SEARCH FLAGGED")
check(data == [b"1"], "SEARCH FLAGGED = %r" % data)
data = ok(c.search(None, "BODY", "zebra"), "SEARCH BODY")
check(data == [b"2"], "SEARCH BODY zebra = %r" % data)
data = ok(c.uid("SEARCH", "HEADER", "Subject", "third"), "UID SEARCH")
check(data == [b"3"], "UID SEARCH HEADER Subject third = %r" % data)

typ, data = c._simple_command("MOVE", "2", "Trash")
check(typ == "OK", "MOVE: %r" % data)
exp = c.response("EXPUNGE")[1]
check(exp == [b"2"], "MOVE expunged %r, want [2]" % exp)

ok(c.store("2", "+FLAGS.SILENT", "(\\Deleted)"), "STORE \\Deleted")
data = ok(c.expunge(), "EXPUNGE")
check(data == [b"2"], "EXPUNGE = %r" % data)

msg = b"From: alice@example.net\r\nSubject: from imaplib\r\n\r\nappended\r\n"
typ, data = c.append("Drafts", "(\\Draft)", None, msg)
check(typ == "OK" and b"APPENDUID 3 1" in data[0], "APPEND: %r" % data)
ok(c.select("Drafts", readonly=True), "EXAMINE Drafts")
data = ok(c.fetch("1", "(FLAGS BODY.PEEK[])"), "FETCH appended")
check(data[0][1] == msg and b"\\Draft" in data[0][0], "appended message: %r" % data)
c.logout()

# IDLE over a raw socket: imaplib has none.
s = socket.create_connection((host, port), timeout=10)
f = s.makefile("rb")


def send(line):
    s.sendall(line.encode() + b"\r\n")


def until(prefix):
    for _ in range(1000):
        line = f.readline()
        check(line != b"", "connection closed waiting for %r" % prefix)
        if line.startswith(prefix):
            return line
    check(False, "no %r" % prefix)


until(b"* OK")
send('i1 LOGIN %s "%s"' % (user, password))
check(until(b"i1 ").startswith(b"i1 OK"), "raw LOGIN")
send("i2 SELECT INBOX")
check(until(b"i2 ").startswith(b"i2 OK"), "raw SELECT")
send("i3 IDLE")
until(b"+ ")
print("IDLING", flush=True)
sys.stdin.readline()
line = until(b"* ")
check(line.strip() == b"* 2 EXISTS", "IDLE got %r, want * 2 EXISTS" % line)
send("DONE")
check(until(b"i3 ").startswith(b"i3 OK"), "IDLE DONE")
send("i4 LOGOUT")
until(b"i4 ")
print("PASS", flush=True)
