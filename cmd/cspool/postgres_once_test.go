package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/spool/pgstore"
)

// TestPostgresDeliveryToTwoServers: two real server processes on one
// PostgreSQL database, and the same signed delivery sent to both, one
// after the other (a balancer retrying it) and both at once: each is
// appended once, and both servers answer with its position (docs/API.md
// §4, "Appends made once").
func TestPostgresDeliveryToTwoServers(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	s := newPGSetup(t, "alice")
	bin := buildServerBinary(t)
	a, _ := s.start(t, bin, "--users-table")
	b, _ := s.start(t, bin, "--users-table")
	// Signed 29 s ahead, at most what the servers allow: past the restart
	// rule of both (their start plus 30 s) once a second has gone by.
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	signed := func(msg string) (http.Header, []byte) {
		t.Helper()
		sealed, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: 1, Body: []byte(msg)}, s.spoolK, s.users["alice"].Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		body := api.EncodeBatch([][]byte{sealed})
		req, err := http.NewRequest(http.MethodPost, a.url+"/v1/users/alice/entries", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", api.ContentType)
		if err := api.SignRequest(req, body, s.spoolK, time.Now().Add(29*time.Second)); err != nil {
			t.Fatal(err)
		}
		return req.Header, body
	}
	send := func(base string, h http.Header, body []byte) (int, uint64) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/users/alice/entries", bytes.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0, 0
		}
		req.Header = h.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, 0
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var res struct{ First uint64 }
		json.Unmarshal(raw, &res)
		if resp.StatusCode != http.StatusOK {
			t.Logf("%s: %d %s", base, resp.StatusCode, raw)
		}
		return resp.StatusCode, res.First
	}

	h, body := signed("Subject: retried\r\n\r\nonce\r\n")
	for i, base := range []string{a.url, b.url} {
		if st, first := send(base, h, body); st != http.StatusOK || first != 1 {
			t.Fatalf("the delivery sent to server %d: %d at %d, want 200 at 1", i+1, st, first)
		}
	}
	h, body = signed("Subject: both at once\r\n\r\nonce\r\n")
	var wg sync.WaitGroup
	var firsts [2]uint64
	var statuses [2]int
	for i, base := range []string{a.url, b.url} {
		wg.Go(func() { statuses[i], firsts[i] = send(base, h, body) })
	}
	wg.Wait()
	if statuses != [2]int{200, 200} || firsts != [2]uint64{2, 2} {
		t.Fatalf("one delivery sent to both at once: %v at %v, want 200 at 2 from both", statuses, firsts)
	}
	st, err := pgstore.Open(ctx, s.dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if head, err := st.Head(ctx, "alice"); err != nil || head != 2 {
		t.Fatalf("alice's head %d, %v; want 2 (two deliveries, each once)", head, err)
	}
}
