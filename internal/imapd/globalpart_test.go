package imapd

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// globalNested is a message/global part inside a message/rfc822 part
// (2.2) and a message/rfc822 part inside a message/global part (3.1),
// each message/global part with a Content-MD5, and a last part with one,
// which the stored MD5s and nested dates must still find in place when
// the message/global parts show no structure; its text makes it one
// the store reads part by part (over 256 KiB).
var globalNested = "From: a@example.org\r\nTo: b@example.org\r\nSubject: nested\r\nDate: Tue, 3 Dec 2024 10:00:00 +0100\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o1\"\r\n\r\n" +
	"--o1\r\nContent-Type: text/plain\r\n\r\n" + strings.Repeat(strings.Repeat("y", 76)+"\r\n", (300<<10)/78) +
	"--o1\r\nContent-Type: message/rfc822\r\n\r\n" +
	"From: c@example.org\r\nSubject: forwarded bounce\r\nDate: Tue, 3 Dec 2024 09:45:00 +0100\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"i1\"\r\n\r\n" +
	"--i1\r\nContent-Type: text/plain\r\n\r\nsee below\r\n" +
	"--i1\r\nContent-Type: message/global\r\nContent-MD5: Z2xvYmFsMQ==\r\n\r\n" +
	"From: d@example.org\r\nSubject: inner\r\nDate: Tue, 3 Dec 2024 09:30:00 +0100\r\n\r\ntext\r\n" +
	"--i1--\r\n" +
	"--o1\r\nContent-Type: message/global\r\nContent-MD5: Z2xvYmFsMg==\r\n\r\n" +
	"From: e@example.org\r\nSubject: global\r\nDate: Tue, 3 Dec 2024 09:20:00 +0100\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"i2\"\r\n\r\n" +
	"--i2\r\nContent-Type: message/rfc822\r\n\r\n" +
	"From: f@example.org\r\nSubject: innermost\r\nDate: Tue, 3 Dec 2024 09:10:00 +0100\r\n\r\nx\r\n" +
	"--i2--\r\n" +
	"--o1\r\nContent-Type: text/plain\r\nContent-MD5: bGFzdA==\r\n\r\nlast\r\n--o1--\r\n"

// globalTop is a message whose body is a message/global part.
var globalTop = "From: a@example.org\r\nSubject: top\r\nMIME-Version: 1.0\r\nContent-Type: message/global\r\nContent-MD5: dG9w\r\n\r\n" +
	"From: b@example.org\r\nSubject: in\r\nDate: Tue, 3 Dec 2024 09:30:00 +0100\r\n\r\nbody\r\n"

// bodyParts returns the written values of the parts of a multipart body
// structure, in order.
func bodyParts(t *testing.T, bs string) []string {
	t.Helper()
	s, ok := strings.CutPrefix(bs, "(")
	if !ok {
		t.Fatalf("no body structure: %.200q", bs)
	}
	var parts []string
	for strings.HasPrefix(s, "(") {
		_, rest, err := parseSexp(s)
		if err != nil {
			t.Fatalf("reading %.200q: %v", bs, err)
		}
		parts = append(parts, s[:len(s)-len(rest)])
		s = rest
	}
	return parts
}

// checkGlobalShape fails unless part, a message/global part's value in
// BODYSTRUCTURE (extended) or BODY, is what the grammar of the session's
// revision reads: a basic part for IMAP4rev1 (RFC 3501 section 9,
// body-type-basic: its fields and size, then body-fld-md5, disposition,
// language and location), a message for IMAP4rev2 (RFC 9051 section 9,
// body-type-msg: its envelope, its body and its lines after the size).
func checkGlobalShape(t *testing.T, what, part string, rev2, extended bool) {
	t.Helper()
	v, rest, err := parseSexp(part)
	if err != nil || rest != "" || !v.isList || len(v.list) < 7 {
		t.Fatalf("%s: %q is no body part", what, part)
	}
	l := v.list
	if !strings.EqualFold(l[0].atom, "message") || !strings.EqualFold(l[1].atom, "global") {
		t.Fatalf("%s: %q is no message/global part", what, part)
	}
	for i := 3; i < 7; i++ {
		if l[i].isList {
			t.Errorf("%s: field %d of %q is a list, where body-fields has none", what, i+1, part)
		}
	}
	n := 7
	if rev2 {
		n = 10
		if !l[7].isList || len(l[7].list) != 10 || len(l[8].list) == 0 || l[9].isList || l[9].str {
			t.Errorf("%s: %q has no envelope, body and lines after its size (body-type-msg)", what, part)
		}
	}
	if extended {
		n += 4
		if l[len(l)-4].isList {
			t.Errorf("%s: %q has a list where body-fld-md5 is", what, part)
		}
	}
	if len(l) != n {
		t.Errorf("%s: %q has %d fields, want %d (IMAP4rev2 %v, extended %v)", what, part, len(l), n, rev2, extended)
	}
}

// TestGlobalPartRev1: a message/global part (RFC 6533) is a basic part
// to a session that has not enabled IMAP4rev2, as Dovecot 2.3 writes it,
// on every path that writes BODYSTRUCTURE or BODY (the stored form, the
// library's with the stored MD5s and dates put in place, a section's
// origin beyond 32 bits, a message read part by part), inside a
// message/rfc822 part and as a message's body too, and its HEADER and
// TEXT are empty and its part 1 is itself, as of any part that is no
// message; a session that enabled IMAP4rev2 gets a
// message, with its envelope and structure, and its HEADER and TEXT.
// IMAP4rev1's grammar (RFC 3501 section 9) has "MESSAGE" "RFC822" alone
// for a message part: it read the envelope where body-fld-md5 is.
func TestGlobalPartRev1(t *testing.T) {
	t.Parallel()
	bounce, err := os.ReadFile(filepath.Join("testdata", "oddparts", "global-bounce.eml"))
	if err != nil {
		t.Fatal(err)
	}
	dove := readRecorded(t, filepath.Join("testdata", "oddparts", "dovecot.txt"))
	r := newRig(t)
	d := r.device("a")
	r.Deliver(bounce)
	r.Deliver([]byte(globalNested))
	d.synced(r.Deliver([]byte(globalTop)))

	items := []string{"BODYSTRUCTURE", "BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (X-NONE)]", "ENVELOPE BODYSTRUCTURE BODY.PEEK[1]",
		"BODY BODYSTRUCTURE", "BODYSTRUCTURE BODY.PEEK[1]<4294967296.10>", "UID FLAGS BODYSTRUCTURE BODY.PEEK[TEXT]<0.10>"}
	for _, rev2 := range []bool{false, true} {
		w := loginWire(t, d.addr)
		if rev2 {
			w.ok("ENABLE IMAP4rev2")
		}
		w.ok("SELECT INBOX")
		session := fmt.Sprintf("IMAP4rev2 %v", rev2)
		for _, it := range items {
			for seq := 1; seq <= 2; seq++ {
				if !rev2 && strings.Contains(it, "4294967296") {
					continue // a 64-bit origin is IMAP4rev2's
				}
				u := w.ok(fmt.Sprintf("FETCH %d (%s)", seq, it))
				if len(u) != 1 {
					t.Fatalf("%s, message %d, %s: %d responses", session, seq, it, len(u))
				}
				for _, name := range []string{"BODYSTRUCTURE", "BODY"} {
					if name == "BODY" && !strings.HasPrefix(it, "BODY ") {
						continue
					}
					bs := fetchItem(u[0], name)
					what := fmt.Sprintf("%s, message %d, %s, %s", session, seq, it, name)
					parts := bodyParts(t, bs)
					if seq == 1 {
						if len(parts) != 3 {
							t.Fatalf("%s: %d parts in %q", what, len(parts), bs)
						}
						checkGlobalShape(t, what, parts[2], rev2, name == "BODYSTRUCTURE")
						if !rev2 && name == "BODYSTRUCTURE" {
							// Dovecot's answer, byte for byte.
							dv := bodyParts(t, strings.TrimPrefix(dove[[2]string{"global-bounce", "BODYSTRUCTURE"}], "BODYSTRUCTURE "))
							if parts[2] != dv[2] {
								t.Errorf("%s: part 3 is\n %s\nwhere Dovecot writes\n %s", what, parts[2], dv[2])
							}
						}
						if !rev2 && name == "BODY" && parts[2] != `("message" "global" NIL NIL NIL "7bit" 273)` {
							t.Errorf("%s: part 3 is %s", what, parts[2])
						}
						continue
					}
					if len(parts) != 4 {
						t.Fatalf("%s: %d parts in %q", what, len(parts), bs)
					}
					checkGlobalShape(t, what, parts[2], rev2, name == "BODYSTRUCTURE")
					// Part 2.2, within the message/rfc822 part 2.
					fwd, _, err := parseSexp(parts[1])
					if err != nil || len(fwd.list) < 10 || !fwd.list[8].isList {
						t.Fatalf("%s: part 2 is no message: %s", what, parts[1])
					}
					inner := bodyParts(t, parts[1][strings.Index(parts[1], `(("text"`):])
					if len(inner) != 2 {
						t.Fatalf("%s: part 2 holds %d parts: %s", what, len(inner), parts[1])
					}
					checkGlobalShape(t, what+", part 2.2", inner[1], rev2, name == "BODYSTRUCTURE")
					if !strings.Contains(parts[1], `"Tue, 3 Dec 2024 09:45:00 +0100"`) {
						t.Errorf("%s: part 2's envelope is not dated as its Date field: %s", what, parts[1])
					}
					if name == "BODYSTRUCTURE" {
						for k, sum := range map[int]string{2: `"Z2xvYmFsMg=="`, 3: `"bGFzdA=="`} {
							if !strings.Contains(parts[k], sum) {
								t.Errorf("%s: part %d's MD5 %s is not in %s", what, k+1, sum, parts[k])
							}
						}
						if !strings.Contains(inner[1], `"Z2xvYmFsMQ=="`) {
							t.Errorf("%s: part 2.2's MD5 is not in %s", what, inner[1])
						}
					}
				}
			}
		}
		for _, it := range []string{"BODY.PEEK[3.HEADER]", "BODY.PEEK[3.TEXT]", "BODY.PEEK[3.HEADER.FIELDS (SUBJECT CONTENT-TYPE)]",
			"BODY.PEEK[3.HEADER.FIELDS.NOT (SUBJECT)]", "BODY.PEEK[3.TEXT]<3.10>"} {
			u := w.ok("FETCH 1 (" + it + ")")
			got := strings.TrimSuffix(strings.TrimPrefix(u[0], "* 1 FETCH ("), ")\r\n")
			dv := dove[[2]string{"global-bounce", it}]
			if empty := strings.HasSuffix(got, " {0}\r\n"); empty == rev2 {
				t.Errorf("%s, %s: %q (Dovecot %q)", session, it, got, dv)
			} else if !rev2 && !oddSameForm("BODY", got, quoteLiterals(dv)) {
				t.Errorf("%s, %s: %q, Dovecot %q", session, it, got, dv)
			}
		}
		for _, it := range []string{"BODYSTRUCTURE", "BODYSTRUCTURE BODY.PEEK[1]", "BODY"} {
			u := w.ok("FETCH 3 (" + it + ")")
			name := strings.Fields(it)[0]
			bs := fetchItem(u[0], name)
			checkGlobalShape(t, session+", message 3, "+it, bs, rev2, name == "BODYSTRUCTURE")
			if name == "BODYSTRUCTURE" && !strings.Contains(bs, `"dG9w"`) {
				t.Errorf("%s, message 3, %s: the MD5 is not in %s", session, it, bs)
			}
		}
		// A basic part's part 1 is itself, and it has no other (as
		// part 1's, a text part's); a message's part 1 is its body.
		// Message 2 is read whole for these (its part 3 holds a
		// message/rfc822 part 3.1 to an IMAP4rev2 session); message 3's
		// body is a message/global part, part 1.
		for _, c := range []struct {
			seq       int
			it, as    string
			rev2Empty bool
		}{
			{1, "BODY.PEEK[3.1]", "BODY.PEEK[3]", false},
			{1, "BODY.PEEK[3.1.MIME]", "BODY.PEEK[3.MIME]", false},
			{1, "BINARY.PEEK[3.1]", "BINARY.PEEK[3]", false},
			{1, "BINARY.SIZE[3.1]", "BINARY.SIZE[3]", false},
			{1, "BODY.PEEK[3.2]", "", true},
			{2, "BODY.PEEK[3.1.1]", "BODY.PEEK[3]", false},
			{2, "BODY.PEEK[2.2.TEXT]", "", false},
			{2, "BODY.PEEK[2.2.1]", "BODY.PEEK[2.2]", false},
			{3, "BODY.PEEK[1.HEADER]", "", false},
			{3, "BODY.PEEK[1.1]", "BODY.PEEK[1]", false},
			{3, "BODY.PEEK[1.1.MIME]", "BODY.PEEK[1.MIME]", false},
		} {
			answer := func(it string) string {
				u := w.ok(fmt.Sprintf("FETCH %d (%s)", c.seq, it))
				_, a, _ := strings.Cut(u[0], "] ")
				return a
			}
			got := answer(c.it)
			switch {
			case !rev2 && c.as == "" && got != "{0}\r\n)\r\n":
				t.Errorf("%s, message %d, %s: %q, want it empty", session, c.seq, c.it, got)
			case !rev2 && c.as != "" && got != answer(c.as):
				t.Errorf("%s, message %d, %s: %q, want %s's", session, c.seq, c.it, got, c.as)
			case rev2 && c.as != "" && got == answer(c.as):
				t.Errorf("%s, message %d, %s: %q, the same as %s, not the message's", session, c.seq, c.it, got, c.as)
			case rev2 && c.rev2Empty != (got == "{0}\r\n)\r\n"):
				t.Errorf("%s, message %d, %s: %q", session, c.seq, c.it, got)
			}
		}

	}
}

// TestEncodedGlobalPart: a message/global part in base64 or
// quoted-printable (RFC 6532 section 3.5; testdata/oddparts/global-*.eml)
// is a basic part to a session of either revision, as Dovecot 2.3
// serves it (its answers in dovecot.txt): BODYSTRUCTURE and BODY without
// an envelope, structure and lines, its HEADER and TEXT empty, its part
// 1 itself, BINARY of it the message decoded, the same when the message
// is read part by part (over 256 KiB), and SEARCH finds a word of the
// decoded message only. To a session that enabled IMAP4rev2 it was a
// message read from its encoded bytes: base64's lines were its HEADER
// and its envelope all NIL, quoted-printable's "=C3=B6" the envelope's
// text, and BODY[2.1.MIME] the whole header of the message.
func TestEncodedGlobalPart(t *testing.T) {
	t.Parallel()
	var ms []oddMessage
	for _, name := range []string{"global-base64", "global-qp"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "oddparts", name+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, oddMessage{name, raw})
	}
	dove := readRecorded(t, filepath.Join("testdata", "oddparts", "dovecot.txt"))
	// The base64 one after a text part of 300 KiB, read part by part.
	b64 := string(ms[0].raw)
	at := strings.Index(b64, "The original message")
	big := b64[:at] + strings.Repeat(strings.Repeat("y", 76)+"\r\n", (300<<10)/78) + b64[at:]

	r := newRig(t)
	d := r.device("a")
	for _, rev2 := range []bool{false, true} {
		session := fmt.Sprintf("IMAP4rev2 %v", rev2)
		w := loginWire(t, d.addr)
		if rev2 {
			w.ok("ENABLE IMAP4rev2")
		}
		if !rev2 {
			appendOddParts(w, ms)
			w.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(big), big))
		}
		w.ok("SELECT INBOX")
		got := fetchOddParts(t, w, ms)
		for _, m := range ms {
			for _, item := range append(slices.Clone(oddPartsItems), "BODY.PEEK[2.HEADER]", "BODY.PEEK[2.TEXT]") {
				k := [2]string{m.name, item}
				dv, ok := dove[k]
				switch {
				case !ok:
					t.Errorf("%s, %s %s: no answer of Dovecot's recorded", session, m.name, item)
				case !oddSameForm(strings.SplitN(item, "[", 2)[0], got[k], quoteLiterals(dv)):
					t.Errorf("%s, %s %s:\n got     %q\n dovecot %q", session, m.name, item, got[k], dv)
				}
			}
		}
		for seq := 1; seq <= 3; seq++ {
			answer := func(it string) string {
				u := w.ok(fmt.Sprintf("FETCH %d (%s)", seq, it))
				_, a, _ := strings.Cut(u[0], "] ")
				return a
			}
			for _, c := range []struct{ it, as string }{
				{"BODY.PEEK[2.1]", "BODY.PEEK[2]"}, {"BODY.PEEK[2.1.MIME]", "BODY.PEEK[2.MIME]"},
				{"BINARY.PEEK[2.1]", "BINARY.PEEK[2]"}, {"BODY.PEEK[2.2]", ""}, {"BODY.PEEK[2.HEADER]", ""},
				{"BODY.PEEK[2.TEXT]", ""}, {"BODY.PEEK[2.1.HEADER]", ""},
			} {
				want := "{0}\r\n)\r\n"
				if c.as != "" {
					want = answer(c.as)
				}
				if a := answer(c.it); a != want {
					t.Errorf("%s, message %d, %s: %.300q, want %.300q", session, seq, c.it, a, want)
				}
			}
			if !strings.Contains(answer("BINARY.PEEK[2]"), "Das Kennwort lautet ") {
				t.Errorf("%s, message %d: BINARY[2] is not the message decoded", session, seq)
			}
		}
		u := w.ok("FETCH 3 (BODYSTRUCTURE)")
		if want := bodyParts(t, strings.TrimPrefix(dove[[2]string{"global-base64", "BODYSTRUCTURE"}], "BODYSTRUCTURE "))[1]; bodyParts(t, fetchItem(u[0], "BODYSTRUCTURE"))[1] != want {
			t.Errorf("%s, message 3: %q, where part 2 is %s", session, u, want)
		}
		for word, want := range map[string]string{"Schneeflockenwalzer": "1 3", "Regenbogenforelle": "2", "inner-b64": "1 3"} {
			u, tagged := w.run("SEARCH BODY " + word)
			if status(tagged) != "OK" || len(u) != 1 || !strings.Contains(u[0], " "+want+"\r\n") && !strings.Contains(u[0], " "+strings.ReplaceAll(want, " ", ",")+"\r\n") {
				t.Errorf("%s, SEARCH BODY %s: %q, want %s", session, word, u, want)
			}
		}
		w.ok("LOGOUT")
	}
}
