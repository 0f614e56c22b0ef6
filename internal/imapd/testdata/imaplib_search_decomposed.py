# SEARCH through Python's imaplib for text written composed, decomposed,
# as a ligature and in fullwidth letters: first with UTF-8 needles as
# literals after CHARSET UTF-8, then as quoted strings after ENABLE
# UTF8=ACCEPT. Prints one line per query: NAME uid uid ...
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

utf8("subject-nfc", "SUBJECT", "caf\u00e9")
utf8("subject-nfd", "SUBJECT", "cafe\u0301")
search("subject-prefix", "SUBJECT", "cafe")
utf8("subject-upper-nfd", "SUBJECT", "CAFE\u0301")
utf8("body-nfc", "BODY", "un caf\u00e9 ici")
utf8("body-nfd", "BODY", "un cafe\u0301 ici")
search("body-ligature", "BODY", "\"final report\"")
utf8("body-fullwidth", "BODY", "final report")
utf8("body-fullwidth-needle", "BODY", "\uff26\uff29\uff2e\uff21\uff2c")

# ENABLE is announced after login, where imaplib read the capabilities,
# and is a command of the authenticated state.
M.unselect()
typ, data = M.capability()
M.capabilities = tuple(data[-1].decode().upper().split())
typ, data = M.enable("UTF8=ACCEPT")
if typ != "OK":
    sys.exit("ENABLE UTF8=ACCEPT: %r %r" % (typ, data))
M.select("INBOX", readonly=True)
search("accept-subject-nfd", "SUBJECT", "\"cafe\u0301\"")
search("accept-body-nfc", "BODY", "\"caf\u00e9 ici\"")
search("accept-fullwidth", "BODY", "\"\uff46\uff49\uff4e\uff41\uff4c\"")
search("accept-ligature", "BODY", "\"\ufb01nal\"")
M.logout()
print("PASS")
