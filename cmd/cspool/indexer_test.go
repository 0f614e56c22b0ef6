package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// TestIndexerTakesOutDeleted: the daemon's background worker indexes the
// bodies delivered and, after an EXPUNGE that deletes indexed bodies,
// takes their rows out of the search index (IndexPending then says
// nothing is left) and reclaims their space (the index is smaller than
// before the EXPUNGE), and a search finds only the messages kept.
func TestIndexerTakesOutDeleted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, ids := storeWith(t, 60, func(pos uint64) string {
		return fmt.Sprintf("From: a@example.org\r\nSubject: message %d\r\n\r\nquarterly %d.\r\n", pos, pos)
	})
	pos := uint64(len(ids))
	x := newIndexer(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	runIndexer(t, ctx, cancel, x)
	waitIndexed(t, ctx, store, "after the deliveries")
	size := func() int64 {
		t.Helper()
		st, err := store.IndexSize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.IndexBytes
	}
	full := size()
	pos++
	var sum [32]byte
	binary.BigEndian.PutUint64(sum[:], pos)
	expunge := mailstore.Entry{Pos: pos, ID: command.ID(sum[:16]), Author: mailstore.AuthorUser,
		Cmd: &command.Command{Kind: command.Expunge, IDs: ids[:50]}}
	if _, err := store.Apply(ctx, []mailstore.Entry{expunge}, pos); err != nil {
		t.Fatal(err)
	}
	if _, left, err := store.IndexPending(ctx, 0); err != nil || left != 50 {
		t.Fatalf("after the EXPUNGE: %d left to the indexer, %v; want the 50 bodies deleted", left, err)
	}
	x.applied()
	waitIndexed(t, ctx, store, "after the EXPUNGE")
	// The rows are tombstones until the indexer reclaims them, in the same
	// round (Store.ReclaimIndex).
	deadline := time.Now().Add(60 * time.Second)
	for size() >= full {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s the index holds %d bytes, %d before the EXPUNGE", size(), full)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a, err := store.TextSearch(ctx, mailstore.InboxID(), mailstore.SearchBody, "quarterly")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Match) != 10 || len(a.Unindexed) != 0 {
		t.Fatalf("quarterly: %d matches, %d unindexed; want the 10 messages kept", len(a.Match), len(a.Unindexed))
	}
}

// TestIndexerWaitsForRestore: while a restore from a checkpoint runs,
// nothing is applied, and the indexer took that for quiet time: it
// indexed the restore's bodies as they were stored, on the cores and the
// write lock the restore needs. Now it waits while the syncer restores
// (busy), and indexes once the restore ends; the daemon's device gives it
// the syncer's Restoring.
func TestIndexerWaitsForRestore(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, _ := storeWith(t, 20, func(pos uint64) string { return fmt.Sprintf("Subject: %d\r\n\r\nrestored\r\n", pos) })
	var restoring atomic.Bool
	restoring.Store(true)
	x := newIndexer(store, slog.New(slog.DiscardHandler))
	x.busy = restoring.Load
	runIndexer(t, ctx, cancel, x)
	// Nothing was applied since the indexer started (the restore's case):
	// without busy it indexes at once.
	time.Sleep(3 * indexQuiet)
	if _, left, err := store.IndexPending(ctx, 0); err != nil || left != 20 {
		t.Fatalf("during the restore: %d of 20 bodies left to the indexer, %v; want all 20", left, err)
	}
	restoring.Store(false)
	waitIndexed(t, ctx, store, "after the restore")

	userKey, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := openDevice(io.Discard, device{user: "alice", userKey: userKey, spoolPub: userKey.Public(), spoolURL: "http://127.0.0.1:1",
		dbPath: filepath.Join(t.TempDir(), "dev.db"), log: slog.New(slog.DiscardHandler)}, "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.close()
	if err := dev.startSync(syncOptions{daemon: true}); err != nil {
		t.Fatal(err)
	}
	if dev.ix.busy == nil || dev.ix.busy() != dev.sync.Restoring() {
		t.Fatal("the daemon's indexer is not told when its syncer restores")
	}
}

// storeWith opens a store in a new directory, closed at the test's end,
// and applies n deliveries to it, of body(pos) at positions 1 to n; it
// returns the store and the deliveries' ids.
func storeWith(t *testing.T, n int, body func(pos uint64) string) (*mailstore.Store, []command.ID) {
	t.Helper()
	store, err := mailstore.Open(filepath.Join(t.TempDir(), "mail.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	var batch []mailstore.Entry
	var ids []command.ID
	for pos := uint64(1); pos <= uint64(n); pos++ {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], pos)
		sum := sha256.Sum256(b[:])
		id := command.ID(sum[:16])
		ids = append(ids, id)
		batch = append(batch, mailstore.Entry{Pos: pos, ID: id, Author: mailstore.AuthorSpool,
			Cmd: &command.Command{Kind: command.Deliver, Date: 1700000000000, Body: []byte(body(pos))}})
	}
	if _, err := store.Apply(context.Background(), batch, uint64(n)); err != nil {
		t.Fatal(err)
	}
	return store, ids
}

// runIndexer runs x until the test ends, then cancels ctx and waits for it.
func runIndexer(t *testing.T, ctx context.Context, cancel context.CancelFunc, x *indexer) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		x.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitIndexed waits up to 60 s until the indexer left no body of store
// unindexed; what names the moment in the failure.
func waitIndexed(t *testing.T, ctx context.Context, store *mailstore.Store, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, left, err := store.IndexPending(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d bodies left to the indexer after 60 s", what, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
