package deliver

import (
	"bytes"
	"testing"
)

// TestLMTPTrace: every LMTP delivery starts with Return-Path (the envelope
// sender, <> for the null sender) and Delivered-To (the address that
// reached the user), as a delivery agent adds them (RFC 5321 section 4.4),
// and the message follows byte for byte; also for addresses in UTF-8, which
// a mail server sends only to a listener that offers SMTPUTF8.
func TestLMTPTrace(t *testing.T) {
	f := newFixture(t, "alice", "bob")
	addr := serve(t, f.d, LMTPOptions{RecipientDelimiter: "+"})
	s := dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	msg := "From: x@example.net\r\nSubject: trace\r\n\r\nbody\n\r\n"
	cases := []struct {
		name, from string
		rcpts      []string
		want       map[string]string // user: the fields in front of msg
	}{
		{"sender", "<bob@example.net>", []string{"<alice@example.org>"},
			map[string]string{"alice": "Return-Path: <bob@example.net>\r\nDelivered-To: alice@example.org\r\n"}},
		{"null sender", "<>", []string{"<Alice+lists@example.org>"},
			map[string]string{"alice": "Return-Path: <>\r\nDelivered-To: Alice+lists@example.org\r\n"}},
		{"quoted local parts", `<"b b\"q"@example.net>`, []string{`<"bob"@example.org>`},
			map[string]string{"bob": "Return-Path: <\"b b\\\"q\"@example.net>\r\nDelivered-To: bob@example.org\r\n"}},
		{"a bare CR in the sender", "<\"a\rb\"@example.net>", []string{"<bob@example.org>"},
			map[string]string{"bob": "Return-Path: <a?b@example.net>\r\nDelivered-To: bob@example.org\r\n"}},
		// C1 controls (U+0080 to U+009F) are controls as C0's are: CSI
		// (U+009B) starts an escape sequence in a terminal that shows
		// the header, NEL (U+0085) ends a line for some readers. RCPT
		// refuses them; a sender so written went into Return-Path raw.
		{"C1 controls in the sender", "<a\u009b31mx\u0085y@example.net> SMTPUTF8", []string{"<bob@example.org>"},
			map[string]string{"bob": "Return-Path: <a?31mx?y@example.net>\r\nDelivered-To: bob@example.org\r\n"}},
		{"UTF-8 addresses (SMTPUTF8)", "<j\u00f6ran@b\u00fccher.example> SMTPUTF8", []string{"<alice@b\u00fccher.example>"},
			map[string]string{"alice": "Return-Path: <j\u00f6ran@b\u00fccher.example>\r\nDelivered-To: alice@b\u00fccher.example\r\n"}},
		{"one user through two addresses", "<s@example.net>", []string{"<alice+a@example.org>", "<alice@example.org>", "<bob@example.org>"},
			map[string]string{
				"alice": "Return-Path: <s@example.net>\r\nDelivered-To: alice+a@example.org\r\n",
				"bob":   "Return-Path: <s@example.net>\r\nDelivered-To: bob@example.org\r\n",
			}},
	}
	want := map[string][]string{}
	for _, c := range cases {
		s.cmd("MAIL FROM:"+c.from, "250 ")
		for _, r := range c.rcpts {
			s.cmd("RCPT TO:"+r, "250 ")
		}
		s.cmd("DATA", "354 ")
		s.write(msg + ".\r\n")
		for range c.rcpts {
			s.expect("250 2.0.0 ")
		}
		for _, u := range []string{"alice", "bob"} {
			if fields, ok := c.want[u]; ok {
				want[u] = append(want[u], fields)
			}
		}
	}
	for _, u := range []string{"alice", "bob"} {
		got := f.opened(t, u)
		if len(got) != len(want[u]) {
			t.Fatalf("%s: %d entries, want %d", u, len(got), len(want[u]))
		}
		for i, o := range got {
			if w := want[u][i] + msg; !bytes.Equal(o.Cmd.Body, []byte(w)) {
				t.Errorf("%s, entry %d: stored %q, want %q", u, i+1, o.Cmd.Body, w)
			}
		}
	}
}

// TestDeliverEnvelope: cspool deliver's way in adds the fields its
// envelope has, ended as the message's first line is, and nothing without
// one.
func TestDeliverEnvelope(t *testing.T) {
	f := newFixture(t, "alice")
	cases := []struct {
		name string
		env  Envelope
		msg  string
		want string
	}{
		{"no envelope", Envelope{}, "Subject: a\r\n\r\nb\r\n", "Subject: a\r\n\r\nb\r\n"},
		{"CRLF", Envelope{Sender: "s@example.net", HasSender: true, Recipient: "alice@example.org"},
			"Subject: a\r\n\r\nb\r\n", "Return-Path: <s@example.net>\r\nDelivered-To: alice@example.org\r\nSubject: a\r\n\r\nb\r\n"},
		{"LF", Envelope{HasSender: true, Recipient: "alice@example.org"},
			"Subject: a\n\nb\n", "Return-Path: <>\nDelivered-To: alice@example.org\nSubject: a\n\nb\n"},
		{"sender only, no line end", Envelope{Sender: "s@example.net", HasSender: true},
			"x", "Return-Path: <s@example.net>\r\nx"},
		{"recipient only, a newline in it", Envelope{Recipient: "alice\n@example.org"},
			"", "Delivered-To: alice?@example.org\r\n"},
		{"recipient only, a C1 control in it", Envelope{Recipient: "alice@example.org\u0085X: y"},
			"", "Delivered-To: alice@example.org?X: y\r\n"},
		{"a local part that needs quotes", Envelope{Sender: `a b"c\d`, HasSender: true},
			"", "Return-Path: <\"a b\\\"c\\\\d\">\r\n"},
	}
	for _, c := range cases {
		if _, err := f.d.DeliverEnvelope(testCtx(t), "alice", c.env, []byte(c.msg)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	got := f.opened(t, "alice")
	for i, c := range cases {
		if string(got[i].Cmd.Body) != c.want {
			t.Errorf("%s: stored %q, want %q", c.name, got[i].Cmd.Body, c.want)
		}
	}
}
