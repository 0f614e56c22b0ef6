package imapd

import (
	"strings"
	"testing"
	"time"
)

// TestByeOnShutdown: a server that closes tells its clients why, with an
// untagged BYE (RFC 9051 section 7.1.5), one idling and one selected; they
// were closed without a word, as a network failure is.
func TestByeOnShutdown(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	idler, selected := loginWire(t, d.addr), loginWire(t, d.addr)
	idler.ok("SELECT INBOX")
	idler.send("i1 IDLE\r\n")
	if l := idler.response(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	selected.ok("SELECT INBOX")
	// A client that asks for a large message and never reads: the
	// server's write stops on a full socket; Close must not wait on it.
	d.synced(r.Deliver([]byte("Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 1<<19))))
	stuck := loginWire(t, d.addr)
	stuck.ok("SELECT INBOX")
	stuck.send("f1 FETCH 1:* (BODY.PEEK[])\r\n")
	time.Sleep(200 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- d.srv.Close() }()
	for name, w := range map[string]*wire{"idling": idler, "selected": selected} {
		_ = w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := ""
		for {
			l, err := w.br.ReadString('\n')
			got += l
			if err != nil {
				break
			}
		}
		if !strings.Contains(got, "* BYE ") {
			t.Errorf("the %s client read %q before the connection closed, want a BYE", name, got)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close did not return in a minute: a client that does not read holds it up")
	}
}
