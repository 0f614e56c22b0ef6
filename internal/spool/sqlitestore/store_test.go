package sqlitestore

import (
	"testing"

	"cspool/internal/spool"
	"cspool/internal/spool/spooltest"
)

func openT(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	spooltest.Run(t,
		func(t *testing.T) spool.Store { return openT(t, t.TempDir(), Options{}) },
		spooltest.Options{
			Reopen: func(t *testing.T, s spool.Store) spool.Store {
				return openT(t, s.(*Store).Dir(), Options{})
			},
		})
}
