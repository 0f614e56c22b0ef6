package api

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestReadBeyondBounds: a spool that answers a read with more entries or
// more bytes than the client asked for (the server only lowers them, and
// lets a first entry alone exceed max_bytes) gets ErrProtocol, read no
// further than the bound. Before, the client took whatever came: a spool
// that never ended its response filled the device's memory (a read asking
// for one entry took 1.9 million and 300 MB in 25 s, and went on).
func TestReadBeyondBounds(t *testing.T) {
	for _, tc := range []struct {
		name            string
		sizes           []int
		maxCount        int
		maxBytes        int64
		ok              bool
		wantMsgContains string
	}{
		{"as many as asked", []int{10, 10, 10}, 3, 0, true, ""},
		{"one more than asked", []int{10, 10, 10, 10}, 3, 0, false, "more than the 3 entries"},
		{"many more, one asked", make([]int, 5000), 1, 0, false, "more than the 1 entries"},
		{"beyond the default cap", make([]int, readCountCap+1), 0, 0, false, "more than the 10000 entries"},
		{"bytes as asked", []int{100, 100}, 0, 200, true, ""},
		{"a first entry beyond max_bytes", []int{1000}, 0, 200, true, ""},
		{"bytes beyond max_bytes", []int{100, 101}, 0, 200, false, "more than the 200 bytes"},
		{"an entry after a large first", []int{1000, 1}, 0, 200, false, "more than the 200 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			for i, n := range tc.sizes {
				b = binary.AppendUvarint(b, uint64(i+1))
				b = binary.AppendUvarint(b, uint64(n))
				b = append(b, strings.Repeat("x", n)...)
			}
			b = append(b, 0)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ContentType)
				w.Header().Set("Cspool-Head", "1000000")
				w.Header().Set("Cspool-Checkpoint", "0")
				w.Write(b)
			}))
			defer srv.Close()
			c, err := NewClient(srv.URL, "alice", genKey(t), srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			lr, err := c.ReadLog(testCtx(t), 0, tc.maxCount, tc.maxBytes, 0)
			if tc.ok {
				if err != nil || len(lr.Entries) != len(tc.sizes) {
					t.Fatalf("ReadLog: %d entries, %v; want %d and no error", len(lr.Entries), err, len(tc.sizes))
				}
				return
			}
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.wantMsgContains) {
				t.Fatalf("ReadLog: %d entries, %v; want ErrProtocol saying %q", len(lr.Entries), err, tc.wantMsgContains)
			}
		})
	}
}

// TestReadStalled: a spool that stops sending in the middle of a read's
// answer, or never sends its headers, gets a transport error saying so
// once the answer has paused for the client's stall bound, and the client
// is free again. Before, the read waited for good: the device's sync
// stopped with no error to show.
func TestReadStalled(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers bool
	}{
		{"after the first entry", true},
		{"before the headers", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.headers {
					w.Header().Set("Content-Type", ContentType)
					w.Header().Set("Cspool-Head", "5")
					w.Header().Set("Cspool-Checkpoint", "0")
					w.Write([]byte{1, 3, 'a', 'b', 'c'})
					w.(http.Flusher).Flush()
				}
				select {
				case <-r.Context().Done():
				case <-release:
				}
			}))
			defer srv.Close()
			defer close(release)
			c, err := NewClient(srv.URL, "alice", genKey(t), srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			c.stall = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = c.ReadLog(ctx, 0, 10, 0, 0)
			if !errors.Is(err, ErrTransport) || !errors.Is(err, errStalled) || !strings.Contains(err.Error(), "the spool sent nothing for 300ms") {
				t.Fatalf("ReadLog: %v; want a transport error saying the spool sent nothing for 300ms", err)
			}
			if ctx.Err() != nil {
				t.Fatalf("ReadLog returned only when its context ended: %v", err)
			}
		})
	}
}

// TestReadDripping: a spool that sends a read's answer a byte at a time,
// each well before the stall bound, gets a transport error naming the
// spool and saying it sends too slowly, once the answer has taken longer
// than the stall bound and come slower than 1 KiB a second on average.
// Before, each byte put the stall bound off again, and the read (and with
// it the device's sync) lasted as long as the spool dripped, with nothing
// logged: here it took the 1,000 bytes dripped and failed only when the
// spool gave up.
func TestReadDripping(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Cspool-Head", "5")
		w.Header().Set("Cspool-Checkpoint", "0")
		w.Write(binary.AppendUvarint([]byte{1}, 100000))
		w.(http.Flusher).Flush()
		for range 1000 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			w.Write([]byte{'a'})
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	c, err := NewClient(srv.URL, "alice", genKey(t), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	c.stall = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err = c.ReadLog(ctx, 0, 10, 0, 0)
	if !errors.Is(err, ErrTransport) || !errors.Is(err, errSlow) ||
		!strings.Contains(err.Error(), "the spool at "+srv.URL+" sent") || !strings.Contains(err.Error(), "slower than 1024 bytes a second") {
		t.Fatalf("ReadLog: %v; want a transport error saying the spool at %s sends slower than 1024 bytes a second", err, srv.URL)
	}
}

// TestCheckpointDownloadStalled: a checkpoint download whose answer never
// comes, stops after its headers, or drips a byte at a time gets a
// transport error naming the spool, once it has paused for the client's
// stall bound or, past it, come slower than 1 KiB a second on average, as
// a read does (TestReadStalled, TestReadDripping). Before, the download
// waited as long as the spool liked (here until the test's context
// ended), and with it a new device's first sync, with no error to show.
func TestCheckpointDownloadStalled(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers bool
		drip    bool
		want    error
		says    string
	}{
		{"before the headers", false, false, errStalled, "sent nothing for 300ms"},
		{"after the headers", true, false, errStalled, "sent nothing for 300ms"},
		{"dripping", true, true, errSlow, "slower than 1024 bytes a second"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.headers {
					w.Header().Set("Content-Type", CheckpointContentType)
					w.Header().Set("Cspool-Checkpoint-Pos", "5")
					w.Header().Set("Content-Length", "100000000")
					w.Write([]byte("x"))
					w.(http.Flusher).Flush()
				}
				for range 2000 {
					wait := time.Hour
					if tc.drip {
						wait = 10 * time.Millisecond
					}
					select {
					case <-r.Context().Done():
						return
					case <-release:
						return
					case <-time.After(wait):
					}
					w.Write([]byte{'x'})
					w.(http.Flusher).Flush()
				}
			}))
			defer srv.Close()
			defer close(release)
			c, err := NewClient(srv.URL, "alice", genKey(t), srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			c.stall = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			var sink strings.Builder
			_, _, err = c.CheckpointTo(ctx, &sink)
			if ctx.Err() != nil {
				t.Fatalf("CheckpointTo returned only when its context ended: %v", err)
			}
			if !errors.Is(err, ErrTransport) || !errors.Is(err, tc.want) ||
				!strings.Contains(err.Error(), "the spool at "+srv.URL) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("CheckpointTo: %v; want a transport error saying the spool at %s %s", err, srv.URL, tc.says)
			}
		})
	}
}
