package mailstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
)

// TestIdleConnectionsClose: a connection left unused for the idle time,
// the writer's and the readers', is closed (each holds SQLite memory that
// only closing gives back), and the store goes on working on new ones,
// with the writer's settings (WAL, foreign keys) and the readers' (query
// only), in plaintext and encrypted.
func TestIdleConnectionsClose(t *testing.T) {
	entries := deliverEntries(20)
	for _, mode := range []string{"plaintext", "encrypted"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mail.db")
			o := Options{Parser: mimeform.Parser{}, idle: 50 * time.Millisecond}
			if mode == "encrypted" {
				o.Key = &devicedb.Key{7}
			}
			s, err := OpenWith(path, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			ctx := context.Background()
			if _, err := s.Apply(ctx, entries[:10], entries[9].Pos); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if n := len(uidsOf(t, s, "INBOX")); n != 10 {
				t.Fatalf("INBOX holds %d messages, want 10", n)
			}
			// database/sql closes idle connections once a second at
			// most (it may have closed these already); wait for it,
			// bounded.
			deadline := time.Now().Add(20 * time.Second)
			for s.wdb.Stats().OpenConnections+s.rdb.Stats().OpenConnections > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("still open after 20 s idle: writer %d, readers %d connections",
						s.wdb.Stats().OpenConnections, s.rdb.Stats().OpenConnections)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if w, r := s.wdb.Stats().MaxIdleTimeClosed, s.rdb.Stats().MaxIdleTimeClosed; w < 1 || r < 1 {
				t.Fatalf("connections closed for idleness: writer %d, readers %d, want at least one of each", w, r)
			}
			// New connections, with the same settings.
			if _, err := s.Apply(ctx, entries[10:], entries[19].Pos); err != nil {
				t.Fatalf("Apply on a new connection: %v", err)
			}
			if n := len(uidsOf(t, s, "INBOX")); n != 20 {
				t.Fatalf("INBOX holds %d messages, want 20", n)
			}
			var mode string
			var fk int
			if err := s.wdb.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
				t.Fatalf("the new writer's journal mode: %q, %v; want wal", mode, err)
			}
			if err := s.wdb.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
				t.Fatalf("the new writer's foreign_keys: %d, %v; want 1", fk, err)
			}
			if _, err := s.rdb.ExecContext(ctx, "DELETE FROM messages"); err == nil {
				t.Fatal("a new read connection deleted messages: query_only is off")
			}
		})
	}
}
