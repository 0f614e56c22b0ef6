package imapd

import (
	"net"
	"strings"
	"testing"
)

// login opens a raw session on addr, logged in, with the first command
// given (SELECT, EXAMINE, ENABLE) done; it returns the session and that
// command's lines.
func login(t *testing.T, addr, first string) (*rawConn, []line) {
	t.Helper()
	rc := dialRaw(t, addr)
	rc.cmdLines("l1", `LOGIN alice "`+testPassword+`"`)
	return rc, rc.cmdLines("l2", first)
}

// expectLines checks that got has a line starting with each of want, and
// none starting with any of not.
func expectLines(t *testing.T, what string, got []line, want []string, not ...string) {
	t.Helper()
	for _, w := range want {
		if findLine(got, w) == "" {
			t.Errorf("%s: no %q in\n%s", what, w, joinLines(got))
		}
	}
	for _, n := range not {
		if l := findLine(got, n); l != "" {
			t.Errorf("%s: %q, want none starting %q, in\n%s", what, l, n, joinLines(got))
		}
	}
}

// TestRecent: \Recent for IMAP4rev1 sessions (RFC 3501 sections 2.3.2,
// 6.3.1, 6.3.2, 6.3.10, 6.4.4, 7.3.2): the first session to SELECT a
// mailbox after mail arrives gets it as recent (RECENT, FLAGS \Recent,
// SEARCH RECENT/NEW/OLD) and no later session does; EXAMINE shows without
// claiming; new mail while selected goes to the first read-write session;
// STATUS RECENT counts what no session has claimed; an IMAP4rev2 session
// neither sees nor claims it.
func TestRecent(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d) // 4 messages, arrived after the server started

	a, sel := login(t, d.addr, "SELECT INBOX")
	expectLines(t, "first SELECT", sel, []string{"* 4 EXISTS", "* 4 RECENT"})
	expectLines(t, "FETCH", a.cmdLines("f1", "FETCH 1:4 (FLAGS)"),
		[]string{`* 1 FETCH (FLAGS (\Recent))`, `* 4 FETCH (FLAGS (\Recent))`})
	a.cmdLines("s1", `STORE 1 +FLAGS.SILENT (\Seen)`)
	expectLines(t, "SEARCH RECENT", a.cmdLines("q1", "SEARCH RECENT"), []string{"* SEARCH 1 2 3 4"})
	expectLines(t, "SEARCH NEW", a.cmdLines("q2", "SEARCH NEW"), []string{"* SEARCH 2 3 4"})
	expectLines(t, "SEARCH OLD", a.cmdLines("q3", "SEARCH OLD"), []string{"* SEARCH"}, "* SEARCH 1")
	// STORE cannot set or clear \Recent; FLAGS replaces the others only.
	expectLines(t, "STORE FLAGS", a.cmdLines("s2", `STORE 2 FLAGS (\Draft)`), []string{`* 2 FETCH (FLAGS (\Draft \Recent))`})

	b, sel := login(t, d.addr, "SELECT INBOX")
	expectLines(t, "second SELECT", sel, []string{"* 4 EXISTS", "* 0 RECENT"})
	expectLines(t, "second session's FETCH", b.cmdLines("f1", "FETCH 1:4 (FLAGS)"), nil, `* 3 FETCH (FLAGS (\Recent`)
	expectLines(t, "second session's SEARCH OLD", b.cmdLines("q1", "SEARCH OLD"), []string{"* SEARCH 1 2 3 4"})

	// New mail while both have INBOX selected: the first one claims it.
	d.synced(r.Deliver([]byte("Subject: fifth\r\n\r\nx\r\n")))
	expectLines(t, "NOOP of the first session", a.cmdLines("n1", "NOOP"), []string{"* 5 EXISTS", "* 5 RECENT"})
	expectLines(t, "NOOP of the second session", b.cmdLines("n1", "NOOP"), []string{"* 5 EXISTS"}, "* 5 RECENT", "* 1 RECENT")
	c, _ := login(t, d.addr, "NOOP")
	expectLines(t, "STATUS INBOX", c.cmdLines("st1", "STATUS INBOX (MESSAGES RECENT)"), []string{"* STATUS INBOX (MESSAGES 5 RECENT 0)"})

	// Mail copied into a mailbox nobody has selected waits for the first
	// SELECT; EXAMINE shows it without claiming it.
	a.cmdLines("c1", "COPY 1:2 Archive")
	expectLines(t, "STATUS Archive", c.cmdLines("st2", "STATUS Archive (RECENT)"), []string{"* STATUS \"Archive\" (RECENT 2)"})
	_, sel = login(t, d.addr, "EXAMINE Archive")
	expectLines(t, "EXAMINE", sel, []string{"* 2 EXISTS", "* 2 RECENT"})
	expectLines(t, "STATUS after EXAMINE", c.cmdLines("st3", "STATUS Archive (RECENT)"), []string{"* STATUS \"Archive\" (RECENT 2)"})

	// An IMAP4rev2 session gets no RECENT and does not claim.
	v2, _ := login(t, d.addr, "ENABLE IMAP4rev2")
	sel = v2.cmdLines("s1", "SELECT Archive")
	expectLines(t, "IMAP4rev2 SELECT", sel, []string{"* 2 EXISTS"}, "* 2 RECENT", "* 0 RECENT")
	expectLines(t, "IMAP4rev2 FETCH", v2.cmdLines("f1", "FETCH 1:2 (FLAGS)"), nil, `* 1 FETCH (FLAGS (\Recent`)
	expectLines(t, "STATUS after IMAP4rev2 SELECT", c.cmdLines("st4", "STATUS Archive (RECENT)"), []string{"* STATUS \"Archive\" (RECENT 2)"})

	// Claimed by the first IMAP4rev1 SELECT.
	_, sel = login(t, d.addr, "SELECT Archive")
	expectLines(t, "SELECT Archive", sel, []string{"* 2 EXISTS", "* 2 RECENT"})
	expectLines(t, "STATUS after SELECT", c.cmdLines("st5", "STATUS Archive (RECENT)"), []string{"* STATUS \"Archive\" (RECENT 0)"})
	// New mail for a mailbox selected only by EXAMINE (and IMAP4rev2)
	// sessions is recent for the EXAMINE ones and stays unclaimed.
	e, _ := login(t, d.addr, "EXAMINE Junk")
	c.cmdLines("c2", "SELECT INBOX")
	c.cmdLines("c3", "COPY 5 Junk")
	expectLines(t, "EXAMINE session's NOOP", e.cmdLines("n1", "NOOP"), []string{"* 1 EXISTS", "* 1 RECENT"})
	expectLines(t, "STATUS Junk", c.cmdLines("st6", "STATUS Junk (RECENT)"), []string{"* STATUS \"Junk\" (RECENT 1)"})
	// An expunge lowers the count.
	a.cmdLines("s3", `STORE 5 +FLAGS.SILENT (\Deleted)`)
	expectLines(t, "EXPUNGE", a.cmdLines("x1", "EXPUNGE"), []string{"* 5 EXPUNGE", "* 4 RECENT"})
	// Another session's expunge, held back from a FETCH: the count goes
	// with the EXPUNGE, not before it (it counted the messages left,
	// while the client's view still had the expunged one).
	b.cmdLines("s2", `STORE 4 +FLAGS.SILENT (\Deleted)`)
	b.cmdLines("x1", "EXPUNGE")
	expectLines(t, "FETCH with an EXPUNGE held", a.cmdLines("f2", "FETCH 1 (UID)"), []string{"* 1 FETCH (UID 1)"}, "* 3 RECENT", "EXPUNGE")
	expectLines(t, "NOOP after it", a.cmdLines("n2", "NOOP"), []string{"* 4 EXPUNGE", "* 3 RECENT"})
}

// TestRecentNotForOldMail: mail already in the store when the server
// starts is not recent.
func TestRecentNotForOldMail(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	srv, err := New(Config{Store: d.store, Submit: d.sub, User: "alice", Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, sel := login(t, ln.Addr().String(), "SELECT INBOX")
	expectLines(t, "SELECT on a server started after the mail came", sel, []string{"* 4 EXISTS", "* 0 RECENT"})
	if !strings.Contains(joinLines(sel), "l2 OK") {
		t.Errorf("SELECT: %s", joinLines(sel))
	}
}
