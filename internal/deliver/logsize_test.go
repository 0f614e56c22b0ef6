package deliver

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"cspool/internal/testproc"
)

// TestLMTPLogsSealedSizeOnly: the log line of a delivery gives the size of
// the entry the spool stores (padded), never the message's own length,
// which padding exists to hide.
func TestLMTPLogsSealedSizeOnly(t *testing.T) {
	f := newFixture(t, "alice")
	var logs testproc.Buffer
	addr := serve(t, f.d, LMTPOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := dialLMTP(t, addr)
	msg := []byte("Subject: size\r\n\r\n" + strings.Repeat("x", 12345) + "\r\n")
	if r, d := sendGo(t, c, msg, "alice@example.org"); len(r)+len(d) > 0 {
		t.Fatalf("delivery failed: %v %v", r, d)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	es, err := f.store.Read(context.Background(), "alice", 0, 10, 1<<20)
	if err != nil || len(es) != 1 {
		t.Fatalf("reading alice's log: %v, %d entries", err, len(es))
	}
	stored := len(es[0].Data)
	if stored == len(msg) {
		t.Fatalf("the sealed entry is %d bytes like the message: the check below proves nothing", stored)
	}
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `msg="lmtp delivered"`) {
			line = l
		}
	}
	if !strings.Contains(line, fmt.Sprintf(" sealed_bytes=%d ", stored)) {
		t.Errorf("log line %q does not give the stored size sealed_bytes=%d", line, stored)
	}
	if strings.Contains(logs.String(), fmt.Sprint(len(msg))) {
		t.Errorf("the log gives the message's own length %d:\n%s", len(msg), logs.String())
	}
}
