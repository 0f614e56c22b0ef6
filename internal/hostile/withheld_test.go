package hostile

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestEntriesWithheldBehindHead: the spool claims a head beyond the device's
// position and answers every read with no entry and no checkpoint past the
// position (API.md §3: a response holds at least one entry when one exists
// after `after`). The device's loop read again at once, without a wait, for
// as long as the spool kept it up: thousands of requests a second from a
// device, its CPU spent, and nothing in its status. Such a read is refused
// as malformed (the status says so, no alarm: withholding is in the spool's
// power, docs/SECURITY.md §2), read again once and then after the loop's
// backoff; an honest read afterwards applies.
func TestEntriesWithheldBehindHead(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(5)
	d.mustSync(t)
	r.deliver(3) // 6..8, hidden, under their real head
	var reads atomic.Int64
	r.proxy.Set("d", &View{Rewrite: DropRange(6, 8, false), Headers: func(h http.Header) {
		reads.Add(1)
		h.Set("Cspool-Head", "8")
	}})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.s.Run(ctx) }()
	const most = 2000
	deadline := time.Now().Add(20 * time.Second) // guards against a hang, times nothing
	for d.s.Status().LastError == "" && reads.Load() < most && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	st := d.s.Status()
	n := reads.Load()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("sync loop: %v", err)
	}
	if st.LastError == "" || !strings.Contains(st.LastError, "no entry") {
		t.Fatalf("after %d reads answered with no entry under a head of %d: status error %q, want the read refused", n, st.Head, st.LastError)
	}
	if n > 3 {
		t.Errorf("%d reads before the status showed %q: want at most 3", n, st.LastError)
	}
	if st.Alarm != "" || d.position(t) != 5 {
		t.Fatalf("alarm %q, position %d: want no alarm, position 5", st.Alarm, d.position(t))
	}
	r.proxy.Set("d", nil)
	d.mustSync(t)
	if p := d.position(t); p != 8 {
		t.Fatalf("position %d after an honest read: want 8", p)
	}
}
