package pgstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/spool/pgstore/pgtest"
)

// Several servers starting at once on an empty database: the advisory lock
// makes each schema step run exactly once, and every Open succeeds.
func TestConcurrentOpen(t *testing.T) {
	o := newOpener(t)
	dsn := pgtest.Schema(t, o.db)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(ctx, dsn, Options{})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d of %d at once: %v", i, len(errs), err)
		}
	}
	s := o.openDSN(t, dsn, Options{})
	var v int
	if err := s.pool.QueryRow(ctx, "SELECT version FROM cspool_schema").Scan(&v); err != nil || v != LatestVersion() {
		t.Errorf("schema version %d (%v), want %d", v, err, LatestVersion())
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	o := newOpener(t)
	s := o.fresh(t)
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, "UPDATE cspool_schema SET version = version + 1"); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, o.dsns[s], Options{})
	if !errors.Is(err, ErrNewerSchema) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("Open on a newer schema: %v, want ErrNewerSchema", err)
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://bob:s3cret@db:5432/spool", "postgres://bob:xxxxx@db:5432/spool"},
		{"postgres://bob@db/spool?password=s3cret&sslmode=require", "postgres://bob@db/spool?password=xxxxx&sslmode=require"},
		{"host=db user=bob password=s3cret dbname=spool", "host=db user=bob password=xxxxx dbname=spool"},
		{"host=db password='s3 cret' dbname=spool", "host=db password=xxxxx dbname=spool"},
		{"postgres://db/spool", "postgres://db/spool"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRedactOddSpellings: the DSN forms Redact left whole or in part:
// the client key's passphrase (sslpassword) and a password parameter in
// capitals in a URL's query, a URL url.Parse refuses (a port mistyped, a
// password holding "/" unescaped), whose password went into the server's
// start line and its errors as written. The key=value form's sslpassword
// was redacted already.
func TestRedactOddSpellings(t *testing.T) {
	for _, in := range []string{
		"postgres://bob@db/spool?sslpassword=s3cret&sslmode=require",
		"postgres://bob@db/spool?PASSWORD=s3cret",
		"postgres://bob:s3cret@db:54x2/spool",
		"postgres://bob:s3c/ret@db/spool",
		"postgresql://bob:s3cret@db:5432/spool?sslpassword=s3cret&x=%zz",
		"host=db sslpassword=s3cret sslkey=/k",
	} {
		if got := Redact(in); strings.Contains(got, "s3c") {
			t.Errorf("Redact(%q) = %q: the secret shows", in, got)
		}
	}
	if got, want := Redact("postgres://bob:s3cret@db:54x2/spool?sslmode=require"), "postgres://xxxxx@db:54x2/spool?xxxxx"; got != want {
		t.Errorf("Redact of a URL url.Parse refuses: %q, want %q", got, want)
	}
}

// A long poll served by one Store wakes within 1 s of an append through
// another pool, by notification alone (the safety re-check is set far out).
func TestWakeAcrossPools(t *testing.T) {
	o := newOpener(t)
	a := o.fresh(t)
	b := o.openDSN(t, o.dsns[a], Options{RecheckInterval: time.Hour})
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		head, err := b.Head(ctx, "zoe")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan time.Time, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := b.Wait(wctx, "zoe", head); err != nil {
				t.Errorf("Wait: %v", err)
			}
			done <- time.Now()
		}()
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if _, err := a.Append(ctx, "zoe", [][]byte{[]byte("m")}); err != nil {
			t.Fatal(err)
		}
		if d := (<-done).Sub(start); d > time.Second {
			t.Errorf("round %d: woken %v after the append, want under 1 s", i, d)
		}
	}
}
