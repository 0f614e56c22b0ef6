package api

import (
	"bytes"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestReplayEveryKind captures one request of each kind the API takes,
// all signed at one moment, and replays each: to the process that took
// it, at once, two seconds before its timestamp leaves the window and
// two after; to a process on the same store started after it was
// signed (a restart); and to another process on the same store (SQLite
// and PostgreSQL) that has not seen its nonce. The process that took a
// request refuses its copy as a replay (401 with Cspool-Replayed) for as
// long as its timestamp is in the window, a delivery's copy gets the first
// answer, and after the window every copy is refused for its timestamp;
// a later process refuses each by the restart rule (503); another process
// answers a read with the same user's log, and refuses the conditional
// append and the checkpoint upload (409). Nothing is appended or stored
// twice, and no copy reaches another user's log.
func TestReplayEveryKind(t *testing.T) {
	for _, tc := range sharedStores {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false, nil)
			ctx := testCtx(t)
			one, two := tc.open(t)
			// The first process's clock, wall and monotonic alike: the real
			// one until wall is set.
			var wall atomic.Int64
			now := func() time.Time {
				if v := wall.Load(); v != 0 {
					return time.Unix(0, v)
				}
				return time.Now()
			}
			srvA := NewServer(Config{Store: one, Users: e.users, SpoolKey: e.spoolK.Public(), Logger: testLogger(t),
				Started: time.Now().Add(-time.Hour), Now: now})
			start := time.Now()
			srvA.nonces.elapsed = func() time.Duration { return now().Sub(start) }
			a := serve(t, srvA).URL
			b := e.serveOn(t, two, nil)

			// alice's log holds one entry.
			first := capture(t, "POST", "/v1/users/alice/entries", EncodeBatch([][]byte{[]byte("first")}), ContentType, e.alice)
			if st, _, msg := first.send(t, a); st != http.StatusOK {
				t.Fatalf("first append: %d %s", st, msg)
			}

			at := time.Now()
			signed := func(method, target string, body []byte, ct string, key *keys.SecretKey) *capturedRequest {
				req, err := http.NewRequest(method, "http://127.0.0.1"+target, bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body != nil {
					req.Header.Set("Content-Type", ct)
				}
				if err := SignRequest(req, body, key, at); err != nil {
					t.Fatal(err)
				}
				return &capturedRequest{method: method, target: target, header: req.Header, body: body}
			}
			cpBody, err := EncodeCheckpoint(nil, []byte("state at 3"))
			if err != nil {
				t.Fatal(err)
			}
			kinds := []struct {
				name string
				req  *capturedRequest
				read bool // answered again by another process
				// other is what another process answers its copy.
				other int
			}{
				{"conditional append", signed("POST", "/v1/users/alice/entries?if_head=1", EncodeBatch([][]byte{[]byte("own")}), ContentType, e.alice), false, http.StatusConflict},
				{"delivery", signed("POST", "/v1/users/alice/entries", EncodeBatch([][]byte{e.delivery(t, "alice", "Subject: x\r\n\r\nx\r\n")}), ContentType, e.spoolK), false, http.StatusOK},
				{"head", signed("GET", "/v1/users/alice/head", nil, "", e.alice), true, http.StatusOK},
				{"read", signed("GET", "/v1/users/alice/entries?after=0", nil, "", e.alice), true, http.StatusOK},
				{"long-poll", signed("GET", "/v1/users/alice/entries?after=3&wait=1", nil, "", e.alice), true, http.StatusOK},
				{"checkpoint upload", signed("PUT", "/v1/users/alice/checkpoint?pos=3&reads=4", cpBody, CheckpointContentType, e.alice), false, http.StatusConflict},
				{"checkpoint download", signed("GET", "/v1/users/alice/checkpoint", nil, "", e.alice), true, http.StatusOK},
			}
			for _, k := range kinds {
				if st, _, msg := k.req.send(t, a); st != http.StatusOK {
					t.Fatalf("%s: %d %s", k.name, st, msg)
				}
			}
			state := func(when string) {
				t.Helper()
				if h, err := one.Head(ctx, "alice"); err != nil || h != 3 {
					t.Errorf("%s: alice's head %d, %v; want 3", when, h, err)
				}
				if h, err := one.Head(ctx, "bob"); err != nil || h != 0 {
					t.Errorf("%s: bob's head %d, %v; want 0", when, h, err)
				}
				c := e.client(t, "alice", e.alice)
				c.base = b
				if cp, err := c.Checkpoint(ctx); err != nil || cp.Pos != 3 || string(cp.Data) != "state at 3" {
					t.Errorf("%s: checkpoint at %d, %q, %v; want the one at 3", when, cp.Pos, cp.Data, err)
				}
			}
			state("the requests taken")

			replayedAt := func(when string) {
				t.Helper()
				for _, k := range kinds {
					st, h, msg := k.req.send(t, a)
					if k.name == "delivery" {
						if st != http.StatusOK || !strings.Contains(msg, `"first":3`) {
							t.Errorf("%s, %s: %d %s; want the first answer, 200 at 3", when, k.name, st, msg)
						}
						continue
					}
					if st != http.StatusUnauthorized || h.Get(HeaderReplayed) != "1" {
						t.Errorf("%s, %s: %d %q %s; want 401 with %s", when, k.name, st, h.Get(HeaderReplayed), msg, HeaderReplayed)
					}
				}
			}
			replayedAt("sent again at once")
			// Sent to another user's path, it does not verify.
			stolen := *kinds[3].req
			stolen.target = strings.Replace(stolen.target, "alice", "bob", 1)
			if st, _, msg := stolen.send(t, a); st != http.StatusUnauthorized || !strings.Contains(msg, "signature") {
				t.Errorf("alice's read sent for bob's log: %d %s; want 401 for the signature", st, msg)
			}

			ts := time.Unix(at.Unix(), 0)
			wall.Store(ts.Add(58 * time.Second).UnixNano())
			replayedAt("sent again 58 s after its timestamp")
			wall.Store(ts.Add(62 * time.Second).UnixNano())
			for _, k := range kinds {
				if st, h, msg := k.req.send(t, a); st != http.StatusUnauthorized || h.Get(HeaderEarliestTS) == "" {
					t.Errorf("62 s after its timestamp, %s: %d %s; want 401 for its timestamp", k.name, st, msg)
				}
			}

			later := e.serveOn(t, one, func(c *Config) { c.Started = time.Now() })
			for _, k := range kinds {
				if st, _, msg := k.req.send(t, later); st != http.StatusServiceUnavailable {
					t.Errorf("to a process started after it was signed, %s: %d %s; want 503", k.name, st, msg)
				}
			}

			for _, k := range kinds {
				st, h, msg := k.req.send(t, b)
				if st != k.other {
					t.Errorf("to another process, %s: %d %s; want %d", k.name, st, msg, k.other)
				}
				if k.read && h.Get(HeaderNonce) == "" {
					t.Errorf("to another process, %s: answered without %s", k.name, HeaderNonce)
				}
				// Once there, never twice.
				if st, _, msg := k.req.send(t, b); k.name != "delivery" && st != http.StatusUnauthorized {
					t.Errorf("to another process twice, %s: %d %s; want 401", k.name, st, msg)
				}
			}
			state("every copy sent")
		})
	}
}

// TestReplaySignedAhead: a request signed as far ahead of the server's
// clock as it allows (a device whose clock is fast) is remembered until
// its own timestamp leaves the window, not a window after it arrived: its
// copy is refused as a replay 58 s after that timestamp, 87 s after it
// was taken, and for its timestamp at 62 s.
func TestReplaySignedAhead(t *testing.T) {
	e := newEnv(t, false, nil)
	var wall atomic.Int64
	now := func() time.Time {
		if v := wall.Load(); v != 0 {
			return time.Unix(0, v)
		}
		return time.Now()
	}
	s := NewServer(Config{Store: e.store, Users: e.users, SpoolKey: e.spoolK.Public(), Logger: testLogger(t),
		Started: time.Now().Add(-time.Hour), Now: now})
	start := time.Now()
	s.nonces.elapsed = func() time.Duration { return now().Sub(start) }
	base := serve(t, s).URL

	at := time.Now().Add(29 * time.Second)
	req, err := http.NewRequest("GET", "http://127.0.0.1/v1/users/alice/head", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := SignRequest(req, nil, e.alice, at); err != nil {
		t.Fatal(err)
	}
	head := &capturedRequest{method: "GET", target: "/v1/users/alice/head", header: req.Header}
	if st, _, msg := head.send(t, base); st != http.StatusOK {
		t.Fatalf("signed 29 s ahead: %d %s; want 200", st, msg)
	}
	ts := time.Unix(at.Unix(), 0)
	for _, c := range []struct {
		after  time.Duration
		header string
	}{{0, HeaderReplayed}, {45 * time.Second, HeaderReplayed}, {58 * time.Second, HeaderReplayed}, {62 * time.Second, HeaderEarliestTS}} {
		if c.after > 0 {
			wall.Store(ts.Add(c.after).UnixNano())
		}
		if st, h, msg := head.send(t, base); st != http.StatusUnauthorized || h.Get(c.header) == "" {
			t.Errorf("sent again %v after its timestamp: %d %s; want 401 with %s", c.after, st, msg, c.header)
		}
	}
}
