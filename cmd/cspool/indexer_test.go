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

// TestIndexerTakesOutDeleted: the daemon's background worker indexes the
// bodies delivered and, after an EXPUNGE that deletes indexed bodies,
// takes their rows out of the search index (IndexPending then says
// nothing is left) and reclaims their space (the index is smaller than
// before the EXPUNGE), and a search finds only the messages kept.
func TestIndexerTakesOutDeleted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := mailstore.Open(filepath.Join(t.TempDir(), "mail.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var batch []mailstore.Entry
	var ids []command.ID
	pos := uint64(0)
	for range 60 {
		pos++
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], pos)
		sum := sha256.Sum256(b[:])
		id := command.ID(sum[:16])
		ids = append(ids, id)
		body := fmt.Sprintf("From: a@example.org\r\nSubject: message %d\r\n\r\nquarterly %d.\r\n", pos, pos)
		batch = append(batch, mailstore.Entry{Pos: pos, ID: id, Author: mailstore.AuthorSpool,
			Cmd: &command.Command{Kind: command.Deliver, Date: 1700000000000, Body: []byte(body)}})
	}
	if _, err := store.Apply(ctx, batch, pos); err != nil {
		t.Fatal(err)
	}
	x := newIndexer(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		x.run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitLeft := func(what string) {
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
	waitLeft("after the deliveries")
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
	waitLeft("after the EXPUNGE")
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
