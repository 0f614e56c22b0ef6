# ENVELOPE's date through Python's imaplib: for each message, FETCH
# ENVELOPE alone and beside a header section, join what imaplib hands back
# (literals as tuples), and read the envelope's first field: a quoted
# string, a literal or NIL. Prints one line a message and item:
# SEQ ITEM DATE, DATE as a JSON string or null.
import imaplib, json, sys

host, port, user, password, count = sys.argv[1:6]
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
M.select("INBOX", readonly=True)


def joined(data):
    out = b""
    for part in data:
        if isinstance(part, tuple):
            out += part[0] + part[1]
        elif part is not None:
            out += part
    return out


def first_field(b):
    i = b.index(b"ENVELOPE (") + len(b"ENVELOPE (")
    if b.startswith(b"NIL", i):
        return None
    if b[i:i + 1] == b'"':
        s, i = bytearray(), i + 1
        while b[i:i + 1] != b'"':
            if b[i:i + 1] == b"\\":
                i += 1
            s += b[i:i + 1]
            i += 1
        return s.decode("utf-8")
    if b[i:i + 1] == b"{":
        j = b.index(b"}", i)
        n = int(b[i + 1:j])
        # imaplib hands the literal after the line that announced it,
        # its CRLF left out.
        return b[j + 1:j + 1 + n].decode("utf-8")
    sys.exit("no date at %r" % b[i:i + 20])


for seq in range(1, int(count) + 1):
    for name, items in (("direct", "(ENVELOPE)"), ("library", "(ENVELOPE BODY.PEEK[HEADER.FIELDS (X-NONE)])")):
        typ, data = M.fetch(str(seq), items)
        if typ != "OK":
            sys.exit("%d %s: %r %r" % (seq, name, typ, data))
        print(seq, name, json.dumps(first_field(joined(data))))
M.logout()
print("PASS")
