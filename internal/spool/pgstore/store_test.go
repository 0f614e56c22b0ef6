package pgstore

import (
	"context"
	"testing"
	"time"

	"cspool/internal/spool"
	"cspool/internal/spool/pgstore/pgtest"
	"cspool/internal/spool/spooltest"
)

// dsnOf remembers the DSN each test store was opened on, for Reopen.
type opener struct {
	db   string
	dsns map[*Store]string
}

func newOpener(t *testing.T) *opener {
	return &opener{db: pgtest.Database(t), dsns: map[*Store]string{}}
}

func dbForBench(b *testing.B) string { return pgtest.Database(b) }

func openBench(b *testing.B, o *opener) *Store {
	ctx := context.Background()
	dsn := pgtest.Schema(b, o.db)
	s, err := Open(ctx, dsn, Options{})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func (o *opener) openDSN(t *testing.T, dsn string, opts Options) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	o.dsns[s] = dsn
	return s
}

// fresh opens a store on a new, empty schema.
func (o *opener) fresh(t *testing.T) *Store {
	return o.openDSN(t, pgtest.Schema(t, o.db), Options{})
}

func (o *opener) reopen(t *testing.T, s spool.Store) spool.Store {
	return o.openDSN(t, o.dsns[s.(*Store)], Options{})
}

func TestConformance(t *testing.T) {
	o := newOpener(t)
	spooltest.Run(t, func(t *testing.T) spool.Store { return o.fresh(t) },
		spooltest.Options{Reopen: o.reopen, WakeTimeout: time.Second})
}
