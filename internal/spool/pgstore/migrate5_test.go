package pgstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"cspool/internal/spool"
)

// v4Append is an append as a cspool of schema version 4 made it: its
// cspool_append_within, with the leaves computed in SQL.
func v4Append(user string, from, to int) string {
	var data, leaves string
	for p := from; p <= to; p++ {
		if data != "" {
			data, leaves = data+", ", leaves+", "
		}
		data += fmt.Sprintf("'%s-%d'::bytea", user, p)
		leaves += fmt.Sprintf("sha256('%s-%d'::bytea)", user, p)
	}
	return fmt.Sprintf("SELECT cspool_append_within('%s'::bytea, NULL, NULL, ARRAY[%s], ARRAY[%s], '')", user, data, leaves)
}

// v4Compact is a compaction as a cspool of schema version 4 made it: the
// checkpoint, the deletions, the usage on the log's row.
func v4Compact(user string, pos int, cp string) []string {
	id := fmt.Sprintf("(SELECT id FROM cspool_logs WHERE name = '%s'::bytea)", user)
	return []string{
		fmt.Sprintf("UPDATE cspool_logs SET bytes = bytes + %d - (SELECT sum(size) FROM cspool_entries WHERE log_id = %s AND pos <= %d) WHERE id = %s",
			len(cp), id, pos, id),
		fmt.Sprintf("INSERT INTO cspool_checkpoints (log_id, pos, data) VALUES (%s, %d, '%s'::bytea)", id, pos, cp),
		fmt.Sprintf("DELETE FROM cspool_entries WHERE log_id = %s AND pos <= %d", id, pos),
	}
}

func entryData(user string, n int) [][]byte {
	d := [][]byte{nil}
	for p := 1; p <= n; p++ {
		d = append(d, fmt.Appendf(nil, "%s-%d", user, p))
	}
	return d
}

// TestMigrateFromVersion4: a database left by schema version 4, with
// logs compacted and not, upgrades to version 5 without rewriting a row:
// heads, chain hashes, tips and usage are what they were, appends and
// compactions carry on from them, and a server of version 4 still running
// fails on the renamed columns instead of reading a head that no longer
// moves.
func TestMigrateFromVersion4(t *testing.T) {
	o := newOpener(t)
	stmts := []string{v4Append("amy", 1, 3), v4Append("bob", 1, 2), v4Append("bob", 3, 4), v4Append("cat", 1, 1)}
	stmts = append(stmts, v4Compact("bob", 2, "cp2")...)
	stmts = append(stmts, v4Compact("cat", 1, "c1")...)
	dsn := buildAt(t, o, 4, stmts...)
	s := o.openDSN(t, dsn, Options{})
	ctx := context.Background()
	var v int
	if err := s.pool.QueryRow(ctx, "SELECT version FROM cspool_schema").Scan(&v); err != nil || v != LatestVersion() || v < 5 {
		t.Fatalf("schema version %d (%v), want %d", v, err, LatestVersion())
	}
	for _, q := range []string{"SELECT head FROM cspool_logs", "SELECT chain FROM cspool_logs"} {
		if _, err := s.pool.Exec(ctx, q); err == nil {
			t.Errorf("%s after the upgrade: accepted", q)
		}
	}
	heads := map[string]int{"amy": 3, "bob": 4, "cat": 1}
	usage := map[string]int64{"amy": 15, "bob": 10 + 3, "cat": 2}
	check := func(when string) {
		t.Helper()
		for user, head := range heads {
			if h, err := s.Head(ctx, user); h != uint64(head) || err != nil {
				t.Errorf("%s: head of %s %d, %v; want %d", when, user, h, err, head)
			}
			wantChain(t, s, user, entryData(user, head))
			tip, err := s.Tip(ctx, user)
			want, _ := s.ChainHash(ctx, user, uint64(head))
			if err != nil || tip.Head != uint64(head) || tip.HeadHash != want {
				t.Errorf("%s: tip of %s %+v, %v; want head %d, hash %x", when, user, tip, err, head, want[:4])
			}
			if u, err := s.Usage(ctx, user); u != usage[user] || err != nil {
				t.Errorf("%s: usage of %s %d, %v; want %d", when, user, u, err, usage[user])
			}
		}
		var sum int64
		for _, u := range usage {
			sum += u
		}
		if u, err := s.UsageSummary(ctx, 0); err != nil || u.Logs != 3 || u.Bytes != sum {
			t.Errorf("%s: usage summary %+v, %v; want 3 logs, %d bytes", when, u, err, sum)
		}
	}
	check("after the upgrade")
	if got := fmt.Sprint(positions(t, s, "bob")); got != "[3 4]" {
		t.Errorf("bob's entries after the upgrade: %s, want [3 4]", got)
	}

	// Appends continue each log, with their conditions.
	for user, head := range heads {
		first, err := s.Append(ctx, user, [][]byte{fmt.Appendf(nil, "%s-%d", user, head+1)})
		if first != uint64(head+1) || err != nil {
			t.Fatalf("append to %s after the upgrade: %d, %v; want %d", user, first, err, head+1)
		}
		heads[user]++
		usage[user] += 5
	}
	var moved *spool.HeadMovedError
	if _, err := s.AppendAt(ctx, "amy", 3, [][]byte{[]byte("amy-x")}); !errors.As(err, &moved) || moved.Head != 4 {
		t.Errorf("AppendAt(3) with head 4: %v, want HeadMovedError at 4", err)
	}
	var over *spool.OverQuotaError
	if _, err := s.AppendWithin(ctx, "amy", 24, [][]byte{[]byte("amy-x")}); !errors.As(err, &over) || over.Usage != 20 {
		t.Errorf("AppendWithin(24) at usage 20: %v, want OverQuotaError at 20", err)
	}
	check("after appends")

	// A compaction over entries from before and after the upgrade.
	st, err := s.Compact(ctx, "amy", spool.Checkpoint{Pos: 4, Data: []byte("cp4")}, []uint64{2})
	if err != nil || st.Deleted != 3 || st.Kept != 1 {
		t.Fatalf("Compact amy at 4: %+v, %v; want 3 deleted, 1 kept", st, err)
	}
	usage["amy"] = 5 + 3
	st, err = s.Compact(ctx, "bob", spool.Checkpoint{Pos: 5, Data: []byte("cp5")}, nil)
	if err != nil || st.Deleted != 3 {
		t.Fatalf("Compact bob at 5: %+v, %v; want 3 deleted", st, err)
	}
	usage["bob"] = 3
	check("after compactions")
	for user := range heads {
		first, err := s.Append(ctx, user, [][]byte{fmt.Appendf(nil, "%s-%d", user, heads[user]+1)})
		if first != uint64(heads[user]+1) || err != nil {
			t.Fatalf("append to %s after the compactions: %d, %v; want %d", user, first, err, heads[user]+1)
		}
		heads[user]++
		usage[user] += 5
	}
	check("at the end")
	if got := fmt.Sprint(positions(t, s, "amy")); got != "[2 5]" {
		t.Errorf("amy's entries at the end: %s, want [2 5]", got)
	}
}
