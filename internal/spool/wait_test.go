package spool_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

// TestWaitFor: which ends of a long-poll are errors. On a real SQLite
// store: a wait that runs out or that stop ends reports nothing new and no
// error; an entry appended while it waits ends it, moved; the caller's
// context ending and the store closing are errors.
func TestWaitFor(t *testing.T) {
	st, err := sqlitestore.Open(filepath.Join(t.TempDir(), "spool"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if _, err := st.Append(ctx, "u", [][]byte{[]byte("1")}); err != nil {
		t.Fatal(err)
	}
	stopped, stop := context.WithCancel(ctx)
	stop()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, tc := range []struct {
		name      string
		ctx, stop context.Context
		after     uint64
		d         time.Duration
		moved     bool
		err       error
	}{
		{"already past", ctx, nil, 0, time.Hour, true, nil},
		{"runs out", ctx, nil, 1, 10 * time.Millisecond, false, nil},
		{"stopped", ctx, stopped, 1, time.Hour, false, nil},
		{"caller gone", cancelled, nil, 1, time.Hour, false, context.Canceled},
	} {
		moved, err := spool.WaitFor(tc.ctx, st, "u", tc.after, tc.d, tc.stop)
		if moved != tc.moved || !errors.Is(err, tc.err) {
			t.Errorf("%s: WaitFor = %v, %v; want %v, %v", tc.name, moved, err, tc.moved, tc.err)
		}
	}

	appended := make(chan error, 1)
	go func() {
		_, err := st.Append(ctx, "u", [][]byte{[]byte("2")})
		appended <- err
	}()
	if moved, err := spool.WaitFor(ctx, st, "u", 1, time.Hour, nil); !moved || err != nil {
		t.Errorf("an append during the wait: WaitFor = %v, %v; want true, nil", moved, err)
	}
	if err := <-appended; err != nil {
		t.Fatal(err)
	}

	st.Close()
	if moved, err := spool.WaitFor(ctx, st, "u", 2, time.Hour, nil); moved || !errors.Is(err, spool.ErrClosed) {
		t.Errorf("a closed store: WaitFor = %v, %v; want false, ErrClosed", moved, err)
	}
}
