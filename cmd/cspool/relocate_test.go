package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// TestIndexerRelocates: the daemon's background worker, once applying is
// quiet, relocates the forms when enough bodies were stored since the
// last time (Store.Relocate; internal/mailstore tests that it places the
// pages together and keeps every row), and not for a few more.
func TestIndexerRelocates(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := mailstore.Open(filepath.Join(t.TempDir(), "mail.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() }) // after the indexer's end (runIndexer)
	pos := uint64(0)
	deliver := func(n int) {
		t.Helper()
		var batch []mailstore.Entry
		for range n {
			pos++
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], pos)
			var id command.ID
			sum := sha256.Sum256(b[:])
			copy(id[:], sum[:])
			body := fmt.Sprintf("From: a@example.org\r\nSubject: message %d\r\n\r\nHello %d.\r\n", pos, pos)
			batch = append(batch, mailstore.Entry{Pos: pos, ID: id, Author: mailstore.AuthorSpool,
				Cmd: &command.Command{Kind: command.Deliver, Date: 1700000000000, Body: []byte(body)}})
		}
		if _, err := store.Apply(ctx, batch, pos); err != nil {
			t.Fatal(err)
		}
	}
	deliver(300)
	x := newIndexer(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	x.relocateAfter = 100
	runIndexer(t, ctx, cancel, x)
	unplaced := func() int64 {
		t.Helper()
		n, _, err := store.Placement(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	wait := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for unplaced() != want {
			if time.Now().After(deadline) {
				t.Fatalf("after 60 s, %d bodies unplaced; want %d", unplaced(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait(0)
	// A few more are not worth it; enough more are.
	deliver(40)
	x.applied()
	if got := unplaced(); got != 40 {
		t.Fatalf("%d bodies unplaced after 40 more; want 40", got)
	}
	deliver(80)
	x.applied()
	wait(0)
}
