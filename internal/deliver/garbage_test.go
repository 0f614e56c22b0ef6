package deliver

import (
	"runtime"
	"strings"
	"testing"
)

// TestLMTPGarbagePerMessage bounds the memory a delivery of a 10 KB message
// allocates, everything included (the LMTP session, reading DATA, sealing,
// the SQLite append): the receive buffer is sized for the message and read
// into directly, and sealing a message smaller than a chunk needs no 64 KiB
// scratch. It was about 170 KB a message; the bound leaves room for noise.
func TestLMTPGarbagePerMessage(t *testing.T) {
	f := newFixture(t, "alice")
	addr := serve(t, f.d, LMTPOptions{})
	c := dialLMTP(t, addr)
	msg := []byte("Subject: garbage\r\n\r\n" + strings.Repeat("lorem ipsum dolor sit amet\r\n", 365))
	const n = 200
	send := func() {
		if r, d := sendGo(t, c, msg, "alice@example.org"); len(r)+len(d) > 0 {
			t.Fatalf("delivery failed: %v %v", r, d)
		}
	}
	for i := 0; i < 20; i++ { // warm up: connection, statements, pools
		send()
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := 0; i < n; i++ {
		send()
	}
	runtime.ReadMemStats(&m1)
	per := float64(m1.TotalAlloc-m0.TotalAlloc) / n
	t.Logf("%.1f KB allocated per %d-byte message, client side included", per/1024, len(msg))
	if per > 100<<10 {
		t.Errorf("%.1f KB allocated per %d-byte message; want under 100 KB", per/1024, len(msg))
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}
