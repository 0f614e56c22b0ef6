package outbox

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime"
	"regexp"
	"strings"
	"time"

	"cspool/internal/submit"
	"cspool/internal/termtext"
)

// failure is a recipient the smarthost refused for good, with its reply.
type failure struct {
	rcpt  queuedRcpt
	reply string
}

// notifyFailures keeps the failures whose NOTIFY asks for a bounce: none
// given (the default), or a list with FAILURE (RFC 3461 section 4.1).
func notifyFailures(fs []failure) []failure {
	var out []failure
	for _, f := range fs {
		if len(f.rcpt.notify) == 0 {
			out = append(out, f)
			continue
		}
		for _, n := range f.rcpt.notify {
			if strings.EqualFold(n, "FAILURE") {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

type dsnInput struct {
	hostname string // this device, the reporting MTA
	relay    string // the smarthost's host:port
	m        *queued
	failed   []failure
	now      time.Time
}

var replyCode = regexp.MustCompile(`^([245])\d\d(?: ([245]\.\d{1,3}\.\d{1,3}))?`)

// status is the RFC 3463 code of a reply: its enhanced code, else the
// class of its basic code, else 5.0.0 (a failure that is no SMTP reply).
func status(reply string) (code string, smtpReply bool) {
	m := replyCode.FindStringSubmatch(reply)
	switch {
	case m == nil:
		return "5.0.0", false
	case m[2] != "":
		return m[2], true
	}
	return m[1] + ".0.0", true
}

// buildDSN writes a delivery status notification (RFC 3464) for the failed
// recipients of m, addressed to its sender, and returns it with its
// Message-ID.
func buildDSN(in dsnInput) ([]byte, string) {
	var r [12]byte
	rand.Read(r[:])
	token := hex.EncodeToString(r[:])
	id := fmt.Sprintf("dsn.%d.%s@%s", in.m.qid, token, in.hostname)
	boundary := "cspool-dsn-" + token
	subject := ""
	if h, err := submit.ParseHeader(in.m.data); err == nil {
		subject, _ = h.Subject()
	}
	var b bytes.Buffer
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\r\n")
	}
	line("From: Mail Delivery System <MAILER-DAEMON@%s>", in.hostname)
	line("To: <%s>", in.m.sender)
	line("Subject: Undelivered Mail Returned to Sender")
	line("Date: %s", in.now.Format(time.RFC1123Z))
	line("Message-ID: <%s>", id)
	line("Auto-Submitted: auto-replied")
	line("MIME-Version: 1.0")
	line("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"", boundary)
	line("")
	line("This is a delivery status notification in MIME format (RFC 3464).")
	line("")
	line("--%s", boundary)
	line("Content-Type: text/plain; charset=utf-8")
	line("Content-Transfer-Encoding: 8bit")
	line("")
	if subject != "" {
		line("Your message %q, sent %s, could not be", subject, in.m.accepted.Format(time.RFC1123Z))
	} else {
		line("Your message sent %s could not be", in.m.accepted.Format(time.RFC1123Z))
	}
	line("delivered to the following recipients; %s (the smarthost)", in.relay)
	line("or cspool on this device gave these reasons:")
	line("")
	for _, f := range in.failed {
		line("  <%s>: %s", termtext.Printable(f.rcpt.address), termtext.Printable(f.reply))
	}
	line("")
	line("The message is attached. Nothing more will be tried for these recipients.")
	line("")
	line("--%s", boundary)
	line("Content-Type: message/delivery-status")
	line("")
	line("Reporting-MTA: dns; %s", in.hostname)
	if in.m.envid != "" {
		line("Original-Envelope-Id: %s", termtext.Printable(in.m.envid))
	}
	line("Arrival-Date: %s", in.m.accepted.Format(time.RFC1123Z))
	for _, f := range in.failed {
		line("")
		line("Final-Recipient: rfc822; %s", termtext.Printable(f.rcpt.address))
		if typ, addr, ok := strings.Cut(f.rcpt.orcpt, ";"); ok {
			line("Original-Recipient: %s; %s", termtext.Printable(strings.ToLower(typ)), termtext.Printable(addr))
		}
		code, isSMTP := status(f.reply)
		line("Action: failed")
		line("Status: %s", code)
		line("Remote-MTA: dns; %s", hostOnly(in.relay))
		if isSMTP {
			line("Diagnostic-Code: smtp; %s", oneLine(f.reply))
		} else {
			line("Diagnostic-Code: X-cspool; %s", mime.QEncoding.Encode("utf-8", oneLine(f.reply)))
		}
		line("Last-Attempt-Date: %s", in.now.Format(time.RFC1123Z))
	}
	line("")
	line("--%s", boundary)
	returned := in.m.data
	if strings.EqualFold(in.m.ret, "HDRS") {
		line("Content-Type: text/rfc822-headers")
		returned = in.m.data[:submit.HeaderEnd(in.m.data)]
	} else {
		line("Content-Type: message/rfc822")
	}
	if !isASCII(returned) {
		line("Content-Transfer-Encoding: 8bit")
	}
	line("")
	b.Write(returned)
	// The line break before a boundary belongs to the boundary (RFC 2046
	// section 5.1.1): one more keeps the returned message whole.
	b.WriteString("\r\n")
	line("--%s--", boundary)
	return b.Bytes(), id
}

func hostOnly(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

// oneLine is s on one line, fit to print: what the client sent as ORCPT
// or ENVID (xtext, decoded) and what a smarthost answered go into the
// bounce's text, which a terminal mail client shows, and an escape
// sequence there acts on the terminal.
func oneLine(s string) string {
	return termtext.Printable(strings.Join(strings.Fields(s), " "))
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
