# Drives cspool's submission listener with Python's smtplib, one scenario
# per run; prints one line per step for the Go test to compare.
import smtplib, sys

host, port, user, password, scenario = sys.argv[1:6]
args = sys.argv[6:]


def connect():
    s = smtplib.SMTP(host, int(port), timeout=60)
    s.ehlo("client.example.org")
    return s


def reply(f, *a):
    try:
        code, msg = f(*a)
        return "%d %s" % (code, msg.decode(errors="replace").split("\n")[-1])
    except smtplib.SMTPResponseException as e:
        return "%d %s" % (e.smtp_code, e.smtp_error.decode(errors="replace"))
    except smtplib.SMTPServerDisconnected:
        return "DISCONNECTED"


if scenario == "ehlo":
    s = connect()
    print(" ".join(sorted(s.esmtp_features)))
    s.quit()
elif scenario == "send":
    # args: sender, message file, recipients...
    s = connect()
    s.login(user, password)
    sender, path, rcpts = args[0], args[1], args[2:]
    refused = s.sendmail(sender, rcpts, open(path, "rb").read(), mail_options=["SMTPUTF8"] if "utf8" in path else [])
    print("SENT", len(refused))
    s.quit()
elif scenario == "auth-login":
    s = connect()
    s.user, s.password = user, password
    print(reply(lambda: s.auth("LOGIN", s.auth_login, initial_response_ok=False)))
    s.quit()
elif scenario == "refused":
    # args: sender, message file, recipient: print each step's reply
    s = connect()
    s.login(user, password)
    print("MAIL", reply(s.mail, args[0]))
    print("RCPT", reply(s.rcpt, args[2]))
    print("DATA", reply(s.data, open(args[1], "rb").read()))
    s.quit()
elif scenario == "before-auth":
    s = connect()
    print("MAIL", reply(s.mail, "alice@example.org"))
    s.quit()
elif scenario == "wrong-password":
    s = connect()
    s.user, s.password = user, password
    for i in range(4):
        try:
            s.auth("PLAIN", s.auth_plain)
            print("LOGGED IN")
        except smtplib.SMTPAuthenticationError as e:
            print(e.smtp_code)
        except smtplib.SMTPServerDisconnected:
            print("DISCONNECTED")
            break
elif scenario == "garbage":
    s = connect()
    s.login(user, password)
    for line in ["XYZZ plugh", "\x01\x02\x03\x04", "garbage-without-a-space"]:
        s.putcmd(line)
        code, msg = s.getreply()
        print(code)
    print("NOOP", reply(s.noop))
    s.quit()
elif scenario == "oversize":
    s = connect()
    s.login(user, password)
    print("MAIL", reply(s.mail, args[0]))
    print("RCPT", reply(s.rcpt, args[2]))
    print("DATA", reply(s.data, open(args[1], "rb").read()))
    print("NOOP", reply(s.noop))
    s.quit()
else:
    sys.exit("unknown scenario " + scenario)
