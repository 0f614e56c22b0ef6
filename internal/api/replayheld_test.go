package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"cspool/internal/keys"
)

// capturedRequest is a signed request as it crossed the network: its
// method, path and query, headers and body.
type capturedRequest struct {
	method, target string
	header         http.Header
	body           []byte
}

func capture(t *testing.T, method, target string, body []byte, contentType string, key *keys.SecretKey) *capturedRequest {
	t.Helper()
	req, err := http.NewRequest(method, "http://127.0.0.1"+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if err := SignRequest(req, body, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	return &capturedRequest{method: method, target: target, header: req.Header, body: body}
}

// send gives the captured request to the server at base as it was.
func (cr *capturedRequest) send(t *testing.T, base string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), cr.method, base+cr.target, bytes.NewReader(cr.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = cr.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// sendHeld gives the captured request's headers to the server at base,
// saying its body is length bytes long (a header the signature does not
// cover), sends the first byte of it, and reads the answer without sending
// more: as someone who replays a captured request and sends its body as
// slowly as the server allows, to hold what the server sets aside for it.
func (cr *capturedRequest) sendHeld(t *testing.T, base string, length int64) (int, http.Header, string) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeLeft(t)))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", cr.method, cr.target, u.Host)
	for name, vs := range cr.header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", length)
	b.Write(cr.body[:1])
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s replayed with its body held back: %v", cr.method, cr.target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// TestReplayedCopyOfDoneRequestHoldsNothing: a captured append or
// checkpoint upload that another server process on the same store has
// carried out is replayed to a process that has not seen its nonce,
// saying its body is as large as the server takes and sending it slowly.
// The store shows the request done (a delivery's record, a head past the
// if_head, a checkpoint at its position): it is answered before its body
// is read, and holds none of the memory of appends or checkpoints, nor
// the key's upload. Before, each such replay held its Content-Length of
// that memory (an append of the spool key all of it, a user's a quarter)
// until its body stalled: an outsider with four captured deliveries made
// every append and delivery to that process wait and get 503.
func TestReplayedCopyOfDoneRequestHoldsNothing(t *testing.T) {
	for _, tc := range sharedStores {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false, nil)
			ctx := testCtx(t)
			one, two := tc.open(t)
			a := e.serveOn(t, one, nil)
			// The second process gives up on a stalled body soon, so that
			// a copy that waits for its body fails the test at once.
			b := e.serveOn(t, two, func(c *Config) { c.WriteStall = 2 * time.Second })
			const large = 4 << 20

			d := capture(t, "POST", "/v1/users/alice/entries",
				EncodeBatch([][]byte{e.delivery(t, "alice", "Subject: once\r\n\r\nx\r\n")}), ContentType, e.spoolK)
			if st, _, msg := d.send(t, a); st != http.StatusOK {
				t.Fatalf("the delivery: %d %s", st, msg)
			}
			st, _, msg := d.sendHeld(t, b, large)
			var res appendResult
			if st != http.StatusOK || json.Unmarshal([]byte(msg), &res) != nil || res.First != 1 || res.Count != 1 {
				t.Errorf("the delivery replayed to the other process, its body held back: %d %s; want 200 {first 1, count 1}", st, msg)
			}

			own := capture(t, "POST", "/v1/users/alice/entries?if_head=1",
				EncodeBatch([][]byte{[]byte("flag 1 as read")}), ContentType, e.alice)
			if st, _, msg := own.send(t, a); st != http.StatusOK {
				t.Fatalf("alice's append at head 1: %d %s", st, msg)
			}
			st, h, msg := own.sendHeld(t, b, large)
			if st != http.StatusConflict || h.Get("Cspool-Head") != "2" {
				t.Errorf("alice's append replayed to the other process, its body held back: %d %q %s; want 409 with head 2", st, h.Get("Cspool-Head"), msg)
			}

			cpBody, err := EncodeCheckpoint([]uint64{1}, []byte("state at 2"))
			if err != nil {
				t.Fatal(err)
			}
			cp := capture(t, "PUT", "/v1/users/alice/checkpoint?pos=2&reads=4", cpBody, CheckpointContentType, e.alice)
			if st, _, msg := cp.send(t, a); st != http.StatusOK {
				t.Fatalf("alice's checkpoint at 2: %d %s", st, msg)
			}
			if st, _, msg := cp.sendHeld(t, b, large); st != http.StatusConflict {
				t.Errorf("alice's checkpoint replayed to the other process, its body held back: %d %s; want 409", st, msg)
			}

			// A balancer's retry of a large delivery, its whole body sent
			// at once by net/http's client, gets the first answer.
			big := capture(t, "POST", "/v1/users/alice/entries",
				EncodeBatch([][]byte{e.delivery(t, "alice", "Subject: large\r\n\r\n"+strings.Repeat("x", 1<<20)+"\r\n")}), ContentType, e.spoolK)
			if st, _, msg := big.send(t, a); st != http.StatusOK {
				t.Fatalf("the large delivery: %d %s", st, msg)
			}
			for range 3 {
				if st, _, msg := big.send(t, b); st != http.StatusOK || !strings.Contains(msg, `"first":3`) {
					t.Errorf("the large delivery sent whole to the other process: %d %s; want 200 at 3", st, msg)
				}
			}

			// Nothing happened twice.
			if h, err := one.Head(ctx, "alice"); err != nil || h != 3 {
				t.Errorf("head %d, %v; want 2", h, err)
			}
			// And each copy, sent whole to either process, is refused or
			// answered as its first: the request was carried out once.
			for _, base := range []string{a, b} {
				if st, _, msg := d.send(t, base); st != http.StatusOK || !strings.Contains(msg, `"first":1`) {
					t.Errorf("the delivery sent whole again: %d %s; want 200 at 1", st, msg)
				}
				if st, _, msg := own.send(t, base); st != http.StatusUnauthorized && st != http.StatusConflict {
					t.Errorf("alice's append sent whole again: %d %s; want 401 or 409", st, msg)
				}
				if st, _, msg := cp.send(t, base); st != http.StatusUnauthorized && st != http.StatusConflict {
					t.Errorf("alice's checkpoint sent whole again: %d %s; want 401 or 409", st, msg)
				}
			}
			if h, err := one.Head(ctx, "alice"); err != nil || h != 3 {
				t.Errorf("head at the end %d, %v; want 3", h, err)
			}
		})
	}
}
