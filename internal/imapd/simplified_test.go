package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// A message beyond the MIME parsing bounds is served as one text/plain
// part (its BODYSTRUCTURE), so a part other than 1 does not exist: BODY[2],
// BINARY[2] and BODY[1.1...] are empty, as for any part that does not
// exist. BODY[2] was extracted from the tree the structure does not show,
// BINARY[2] was the whole body, and a section 300 levels deep was looked
// for through every level of the message's real tree (1000 levels took
// 5.6 s of the daemon's time, the time growing with the square of the
// depth).
func TestSimplifiedMessageParts(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	const levels = 400
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=top\r\n\r\n")
	b.WriteString("--top\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--top\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n")
	for i := range levels {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n", i, i+1)
	}
	fmt.Fprintf(&b, "--b%d\r\nContent-Type: text/plain\r\n\r\nneedle\r\n--top--\r\n", levels)
	d.synced(r.Deliver([]byte(b.String())))
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	u := w.ok("FETCH 1 (BODYSTRUCTURE)")
	if len(u) != 1 || !strings.Contains(u[0], `BODYSTRUCTURE ("text" "plain"`) {
		t.Fatalf("BODYSTRUCTURE of a message nested %d deep: %q, want one text/plain part", levels, u)
	}
	deep := "1" + strings.Repeat(".1", 300)
	for _, c := range []struct{ item, want string }{
		{"BODY.PEEK[2]", "BODY[2] {0}\r\n"},
		{"BINARY.PEEK[2]", "BINARY[2] ~{0}\r\n"},
		{"BINARY.SIZE[2]", "BINARY.SIZE[2] 0"},
		{"BODY.PEEK[1.1]", "BODY[1.1] {0}\r\n"},
		{"BODY.PEEK[" + deep + "]", "BODY[" + deep + "] {0}\r\n"},
		{"BODY.PEEK[" + deep + ".MIME]", "BODY[" + deep + ".MIME] {0}\r\n"},
		// Part 1 is the body, as for any message served as one part.
		{"BODY.PEEK[1]<0.6>", "BODY[1]<0> {6}\r\n--top\r)"},
	} {
		u := w.ok("FETCH 1 (" + c.item + ")")
		if len(u) != 1 || !strings.Contains(u[0], c.want) {
			t.Errorf("FETCH %s: got %.200q, want %q in it", c.item, u, c.want)
		}
	}
}

// TestSimplifiedPartOne: part 1 of a message served as one text/plain
// part (beyond the parsing bounds) has no HEADER or TEXT, being no
// message/rfc822 part, whatever the message's real first part is. When
// that was a forwarded message, BODY[1.HEADER] was the body's first
// lines up to a blank one (the first delimiter and the part's MIME
// header) and BODY[1.TEXT] the rest of the body.
func TestSimplifiedPartOne(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	msg := simplifiedMessage()
	d.synced(r.Deliver([]byte(msg)))
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	u := w.ok("FETCH 1 (BODYSTRUCTURE)")
	if len(u) != 1 || !strings.Contains(u[0], `BODYSTRUCTURE ("text" "plain"`) {
		t.Fatalf("BODYSTRUCTURE of a message nested 40 deep: %q, want one text/plain part", u)
	}
	for _, c := range []struct{ item, want string }{
		{"BODY.PEEK[1.HEADER]", "BODY[1.HEADER] {0}\r\n)"},
		{"BODY.PEEK[1.TEXT]", "BODY[1.TEXT] {0}\r\n)"},
		{"BODY.PEEK[1.HEADER.FIELDS (SUBJECT)]", "{0}\r\n)"},
		// The message's own sections, as before.
		{"BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "{17}\r\nSubject: deep\r\n\r\n)"},
		{"BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM MIME-VERSION)]", "{47}\r\nContent-Type: multipart/mixed; boundary=top\r\n\r\n)"},
		{"BODY.PEEK[1]<0.6>", "BODY[1]<0> {6}\r\n--top\r)"},
	} {
		u := w.ok("FETCH 1 (" + c.item + ")")
		if len(u) != 1 || !strings.Contains(u[0], c.want) {
			t.Errorf("FETCH %s: got %.300q, want %q in it", c.item, u, c.want)
		}
	}
}
