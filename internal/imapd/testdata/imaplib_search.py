# SEARCH through Python's imaplib against the index: words, substrings,
# case, UTF-8 needles as literals with CHARSET UTF-8, RFC 2047 headers,
# quoted-printable and base64 bodies, an attachment that must not match.
# Prints one line per query: NAME uid uid ...
import imaplib, sys

host, port, user, password = sys.argv[1:5]
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
M.select("INBOX", readonly=True)

def search(name, *crit, charset=None):
    typ, data = M.uid("SEARCH", *(("CHARSET", charset) if charset else ()), *crit)
    if typ != "OK":
        sys.exit("%s: %r %r" % (name, typ, data))
    print(name, data[0].decode().strip())

def utf8(name, key, value):
    M.literal = value.encode("utf-8")
    search(name, key, charset="UTF-8")

search("body-word", "BODY", "quarterly")
search("body-substring", "BODY", "arterl")
search("body-case", "BODY", "QUARTERLY")
search("text-header", "TEXT", "budget")
search("subject", "SUBJECT", "budget")
search("from", "FROM", "carol@example")
search("to", "TO", "dave")
search("cc", "CC", "erin")
search("body-qp", "BODY", "\"naive cafe\"")
search("not-in-attachment", "BODY", "secretattachment")
search("short", "BODY", "zz")
search("or", "OR", "BODY", "quarterly", "FROM", "carol")
search("not", "NOT", "BODY", "quarterly")
utf8("utf8-body", "BODY", "straße")
utf8("utf8-upper", "BODY", "STRASSE")
utf8("utf8-subject", "SUBJECT", "résumé")
utf8("utf8-base64", "BODY", "Grüße")
M.logout()
print("PASS")
