package api

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"cspool/internal/spool/pgstore/pgtest"
	"cspool/internal/userdb"
)

// TestStrangerCannotFloodTheLogWhileUsersAreDown: with the users in
// PostgreSQL (--users-table) and their database refusing connections, a
// stranger's requests, refused before their signature is checked, are
// logged as the other such refusals are, at most refusalLogsPerSecond
// lines a second, the next saying how many were left out. Before, the
// database's failure was not counted among them: each request was logged
// (a warning of 400 bytes and more), every time, and never slowed, for as
// long as the outage lasted.
func TestStrangerCannotFloodTheLogWhileUsersAreDown(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := testCtx(t)
	users, err := userdb.OpenPG(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(users.Close)
	var out lockedBuffer
	e := newEnv(t, false, func(c *Config) {
		c.Users = users
		c.RefusalRate = -1
		c.Logger = slog.New(slog.NewTextHandler(&out, nil))
	})
	// The users' database refuses every connection, and those it had
	// are ended.
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, pgtest.BaseDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, q := range []string{
		"ALTER DATABASE " + cfg.Database + " ALLOW_CONNECTIONS false",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + cfg.Database + "'",
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	signed, err := http.NewRequest("GET", e.srv.URL+"/v1/users/carol/head", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := SignRequest(signed, nil, e.stranger, time.Now()); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 50
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := range each {
				req := signed.Clone(ctx)
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode < 500 {
					t.Errorf("request %d with the users' database down: %d, want a 5xx", i, resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if t.Failed() {
		return
	}
	var lines, left int
	for l := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
		if !strings.Contains(l, `msg="http request"`) {
			continue
		}
		lines++
		const attr = "similar_refusals_not_logged"
		if i := strings.Index(l, " "+attr+"="); i >= 0 {
			var n int
			fmt.Sscanf(l[i+len(attr)+2:], "%d", &n)
			left += n
		}
	}
	sent := workers * each
	// Each line is counted in the second its request started: requests
	// answered across a second's turn count in two, so twice the rate.
	bound := 2 * refusalLogsPerSecond * int(math.Ceil(took.Seconds())+1)
	t.Logf("%d requests in %v: %d log lines (bound %d), %d said left out", sent, took.Round(time.Millisecond), lines, bound, left)
	if lines > bound {
		t.Errorf("%d requests of a stranger with the users' database down logged %d lines in %v; want at most %d", sent, lines, took.Round(time.Millisecond), bound)
	}
	if lines+left > sent {
		t.Errorf("%d lines logged and %d said left out, for %d requests", lines, left, sent)
	}
}
