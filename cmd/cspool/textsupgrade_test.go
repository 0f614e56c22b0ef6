package main

import (
	"compress/gzip"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/devicedb"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
)

// TestDaemonUpgradesOldTexts: a device whose search index holds the
// texts an earlier cspool made (the index of internal/mailstore's
// testdata/texts-v0.db.gz, made by that cspool from the same messages,
// written over the daemon's own) does not find an 8-bit From read as
// windows-1252, a part in an unknown charset nor a quoted display name as
// ENVELOPE shows it, as that cspool did not;
// started again, the daemon indexes those messages again in the
// background, and SEARCH over IMAP finds them, with the same UIDs,
// flags and modseqs.
func TestDaemonUpgradesOldTexts(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	old := openOldStore(t, "texts-v0.db.gz")
	var raws [][]byte
	rows, err := old.Query("SELECT data FROM blobs ORDER BY bid")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw)
	}
	if err := rows.Close(); err != nil || len(raws) != 3 {
		t.Fatalf("the old store's messages: %d, %v; want its 3", len(raws), err)
	}

	d := startUpgradeDevice(t)
	c, err := imapclient.DialInsecure(d.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login("alice", d.password).Wait(); err != nil {
		t.Fatal(err)
	}
	for i, raw := range raws {
		ac := c.Append("INBOX", int64(len(raw)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}})
		if _, err := ac.Write(raw); err != nil {
			t.Fatal(err)
		}
		if err := ac.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := ac.Wait(); err != nil {
			t.Fatalf("APPEND of message %d: %v", i+1, err)
		}
	}
	c.Close()
	d.stop(t)

	before := dumpDevice(t, d.db)
	writeOldIndex(t, d.db, d.alice, old)
	searches := []struct {
		crit *imap.SearchCriteria
		want imap.UID
	}{
		{&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "Jörg"}}}, 1},
		{&imap.SearchCriteria{Body: []string{"capybara"}}, 2},
		{&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: `Smith "Bob" Jones`}}}, 3},
	}
	// The premise: the device's index answers as the earlier cspool's.
	ms, err := openDeviceDB(d.db)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		key    mailstore.SearchKey
		needle string
	}{{mailstore.SearchFrom, "Jörg"}, {mailstore.SearchBody, "capybara"}, {mailstore.SearchFrom, `Smith "Bob" Jones`}} {
		a, err := ms.TextSearch(t.Context(), mailstore.InboxID(), q.key, q.needle)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Match) != 0 || len(a.Unindexed) != 0 {
			t.Fatalf("the index written over the device's finds %q in %v (not indexed %v): not the earlier cspool's", q.needle, a.Match, a.Unindexed)
		}
	}
	ms.Close()

	daemon := d.start(t)
	deadline := time.Now().Add(60 * time.Second)
	for i, q := range searches {
		for {
			c, err := imapclient.DialInsecure(d.addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Login("alice", d.password).Wait(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			data, err := c.UIDSearch(q.crit, nil).Wait()
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			if got := data.AllUIDs(); slices.Equal(got, []imap.UID{q.want}) {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("search %d: 60 s after the daemon started, UID SEARCH gives %v, want [%d]; its output:\n%s", i, got, q.want, daemon.stderr)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for !strings.Contains(daemon.stderr.String(), "search texts up to date") {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not log the upgrade's end; its log:\n%s", daemon.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stop(t)
	if diff := mailstore.Diff(before, dumpDevice(t, d.db), 10); len(diff) != 0 {
		t.Errorf("the upgrade changed the replicated state (UIDs, flags, modseqs): %v", diff)
	}
}

// openOldStore opens, read-only, a copy of
// internal/mailstore/testdata/name: a store an earlier cspool made
// (texts-v0.db.gz indexed, forms-v0.db.gz parsed), gzipped.
func openOldStore(t *testing.T, name string) *sql.DB {
	t.Helper()
	f, err := os.Open(filepath.Join("../../internal/mailstore/testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "old.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := devicedb.Open(path, devicedb.Options{Params: "mode=ro"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Close() })
	return old
}

// writeOldIndex writes the search index of the old store over the
// device database at db (its daemon stopped), whose bodies must be the
// old store's, under the same ids: the tables of both FTS5 indexes and
// the words, as that cspool wrote them, every body indexed and of texts
// version 0.
func writeOldIndex(t *testing.T, db string, user *keys.SecretKey, old *sql.DB) {
	t.Helper()
	key := devicedb.Key(user.DatabaseKey("mailstore"))
	dev, err := devicedb.Open(db, devicedb.Options{Key: &key, Params: "_pragma=busy_timeout(10000)"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	tx, err := dev.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	ids := func(q *sql.DB, tx *sql.Tx) string {
		var s string
		var err error
		if q != nil {
			err = q.QueryRow("SELECT group_concat(bid || ':' || hex(digest)) FROM (SELECT bid, digest FROM bodies ORDER BY bid)").Scan(&s)
		} else {
			err = tx.QueryRow("SELECT group_concat(bid || ':' || hex(digest)) FROM (SELECT bid, digest FROM bodies ORDER BY bid)").Scan(&s)
		}
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if o, n := ids(old, nil), ids(nil, tx); o != n {
		t.Fatalf("the device's bodies are not the old store's: %s against %s", n, o)
	}
	for _, q := range []string{"DELETE FROM unindexed", "DELETE FROM unindexable", "DELETE FROM search_texts",
		"DELETE FROM unindex_pending", "UPDATE bodies SET texts_version = 0"} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	// The words' trigger makes wordgrams of them as the old store did.
	tables := []string{"words"}
	rows, err := old.Query(`SELECT name FROM sqlite_schema WHERE type = 'table'
		AND (name LIKE 'fts\_%' ESCAPE '\' OR name LIKE 'ftsw\_%' ESCAPE '\') ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if err := rows.Close(); err != nil || len(tables) < 9 {
		t.Fatalf("the old store's index tables: %v, %v", tables, err)
	}
	for _, table := range tables {
		if _, err := tx.Exec("DELETE FROM " + table); err != nil {
			t.Fatal(err)
		}
		rows, err := old.Query("SELECT * FROM " + table)
		if err != nil {
			t.Fatal(err)
		}
		cols, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		insert := fmt.Sprintf("INSERT INTO %s VALUES (?%s)", table, strings.Repeat(", ?", len(cols)-1))
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(insert, vals...); err != nil {
				t.Fatalf("%s: %v", table, err)
			}
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}
