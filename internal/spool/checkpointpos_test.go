package spool_test

import (
	"context"
	"path/filepath"
	"testing"

	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

// compactorOnly is a real store seen through the Compactor capability
// alone, as a store without CheckpointPositioner would be.
type compactorOnly struct {
	spool.Store
	spool.Compactor
}

// plain is a real store seen without its optional capabilities.
type plain struct{ spool.Store }

// TestCheckpointPos: the position of the newest checkpoint, 0 before one,
// the same whether the store gives it directly or through
// LatestCheckpoint, and 0 from a store that does not compact.
func TestCheckpointPos(t *testing.T) {
	ctx := context.Background()
	st, err := sqlitestore.Open(filepath.Join(t.TempDir(), "spool"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Append(ctx, "u", [][]byte{[]byte("1"), []byte("2"), []byte("3")}); err != nil {
		t.Fatal(err)
	}
	var _ spool.CheckpointPositioner = st
	views := map[string]spool.Store{
		"positioner":     st,
		"compactor only": compactorOnly{st, st},
	}
	check := func(want uint64) {
		t.Helper()
		for name, s := range views {
			if got, err := spool.CheckpointPos(ctx, s, "u"); err != nil || got != want {
				t.Errorf("%s: CheckpointPos = %d, %v; want %d", name, got, err, want)
			}
		}
		if got, err := spool.CheckpointPos(ctx, plain{st}, "u"); err != nil || got != 0 {
			t.Errorf("a store that does not compact: CheckpointPos = %d, %v; want 0", got, err)
		}
	}
	check(0)
	if _, err := st.Compact(ctx, "u", spool.Checkpoint{Pos: 2, Data: []byte("cp")}, nil); err != nil {
		t.Fatal(err)
	}
	check(2)
}
