"""Learn the hierarchy as a client does: LIST "" "" for the delimiter, then
LIST "" "*" for every name, with Python's imaplib (written independently of
go-imap). Usage: imaplib_hierarchy.py HOST PORT USER PASSWORD; prints PASS."""
import imaplib
import re
import sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
LINE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>"[^"]*"|NIL) (?P<name>.*)$')


def parse(data):
    out = []
    for item in data:
        if item is None:
            continue
        m = LINE.match(item)
        if not m:
            raise SystemExit("unparsable LIST response %r" % item)
        name = m.group("name")
        if name.startswith(b'"'):
            name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        out.append((m.group("attrs").split(), m.group("delim").strip(b'"'), name.decode("ascii")))
    return out


c = imaplib.IMAP4(host, port)
c.login(user, password)
for name in ('"Work/2025/Q1/"', '"Projekte &APwA,A-"', '"Projekte &APwA,A-/Alt"'):
    typ, data = c.create(name)
    if typ != "OK":
        raise SystemExit("CREATE %s: %s %r" % (name, typ, data))
typ, data = c.list('""', '""')
entries = parse(data)
if typ != "OK" or len(entries) != 1:
    raise SystemExit('LIST "" "": %s %r' % (typ, data))
attrs, delim, root = entries[0]
if delim != b"/" or root != "" or b"\\Noselect" not in attrs:
    raise SystemExit('LIST "" "": delimiter %r root %r attrs %r' % (delim, root, attrs))
typ, data = c.list('""', "*")
if typ != "OK":
    raise SystemExit('LIST "" "*": %s %r' % (typ, data))
names = {name: attrs for attrs, d, name in parse(data) if d == delim}
for want in ("INBOX", "Work", "Work/2025", "Work/2025/Q1", "Projekte &APwA,A-", "Projekte &APwA,A-/Alt"):
    if want not in names:
        raise SystemExit("LIST missing %r: %r" % (want, sorted(names)))
if b"\\HasChildren" not in names["Work/2025"] or b"\\HasNoChildren" not in names["Work/2025/Q1"]:
    raise SystemExit("children attributes wrong: %r" % names)
# Walk down level by level with %, as a folder tree view does.
seen, todo = set(), [""]
while todo:
    prefix = todo.pop()
    typ, data = c.list('""', '"%s%%"' % prefix)
    for attrs, d, name in parse(data):
        seen.add(name)
        if b"\\HasChildren" in attrs:
            todo.append(name + "/")
if seen != set(names):
    raise SystemExit("walking with %%: %r, LIST *: %r" % (sorted(seen), sorted(names)))
c.logout()
print("PASS")
