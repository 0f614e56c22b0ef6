package imapd

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogHoldsNoCommandText: go-imap logs a command it could not parse
// with what it could not parse, quoted: a search word, the user's own
// text, went into the daemon's log ("bad number set value
// \"MYDIAGNOSIS-...\""), which never holds what the user reads or writes
// (docs/IMAP.md). Now the log says how long it was, not what.
func TestLogHoldsNoCommandText(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var logs logBuffer
	d := r.deviceWith("a", Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	deliverAll(r, d)
	rc := loggedInRaw(t, d.addr)
	rc.cmd("a2 SELECT INBOX")
	rc.until("a2 ")
	rc.cmd("a3 UID SEARCH mydiagnosis-private-word")
	if got := rc.until("a3 "); !strings.Contains(got, "a3 NO") && !strings.Contains(got, "a3 BAD") {
		t.Fatalf("a search that does not parse: %q", got)
	}
	rc.cmd("a4 NOOP")
	if got := rc.until("a4 "); !strings.Contains(got, "a4 OK") {
		t.Fatalf("NOOP after it: %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "UID SEARCH") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	if !strings.Contains(out, "UID SEARCH") {
		t.Fatalf("the failure was not logged at all:\n%s", out)
	}
	if strings.Contains(strings.ToLower(out), "mydiagnosis") {
		t.Errorf("the log holds the command's text:\n%s", out)
	}
}
