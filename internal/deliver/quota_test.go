package deliver

import (
	"strings"
	"testing"

	"cspool/internal/spool"
)

// TestLMTPOverQuota: with the spool's quota on deliveries, a user whose log
// is full gets 452 4.2.2 (mailbox full: the MTA keeps the message), the
// other recipient of the same message is delivered, and nothing is
// appended to the full log.
func TestLMTPOverQuota(t *testing.T) {
	f := newFixture(t, "alice", "bob")
	f.d.Log = spool.WithinQuota(f.store, 3000)
	addr := serve(t, f.d, LMTPOptions{})
	s := dialScripted(t, addr)
	s.cmd("LHLO client.example.org", "250 ")
	body := strings.Repeat("x", 1500)
	send := func(rcpts []string, want ...string) {
		t.Helper()
		s.cmd("MAIL FROM:<sender@example.net>", "250 ")
		for _, r := range rcpts {
			s.cmd("RCPT TO:<"+r+">", "250 ")
		}
		s.cmd("DATA", "354 ")
		s.write("Subject: q\r\n\r\n" + body + "\r\n.\r\n")
		for i, w := range want {
			if got := s.expect(w); !strings.HasPrefix(got, w) {
				t.Fatalf("recipient %d: %q, want %q", i, got, w)
			}
		}
	}
	send([]string{"alice@example.org"}, "250 2.0.0")
	send([]string{"alice@example.org", "bob@example.org"}, "452 4.2.2", "250 2.0.0")
	if n := len(f.bodies(t, "alice")); n != 1 {
		t.Errorf("alice's log has %d entries, want the 1 delivered before it was full", n)
	}
	if n := len(f.bodies(t, "bob")); n != 1 {
		t.Errorf("bob's log has %d entries, want 1", n)
	}
	if KindOf(&spool.OverQuotaError{}) != KindOverQuota || !IsTemporary(&spool.OverQuotaError{}) {
		t.Error("over quota is not a temporary failure of its own kind")
	}
}
