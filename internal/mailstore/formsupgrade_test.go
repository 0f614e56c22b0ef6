package mailstore

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
)

// oldFormsStore writes a copy of testdata/forms-v0.db.gz (a store made by
// an earlier cspool, testdata/forms-v0.md) into a folder of the test's
// and returns its path.
func oldFormsStore(t *testing.T) string { return oldStore(t, "forms-v0.db.gz") }

// oldStore writes a copy of testdata/name, a store made by an earlier
// cspool and gzipped, into a folder of the test's and returns its path.
func oldStore(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
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
	path := filepath.Join(t.TempDir(), "mail.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// storedForms is what a store keeps of a body's parse.
type storedForms struct {
	headerLen                   int64
	status                      uint8
	envelope, structure         []byte
	envelopeWire, structureWire []byte
	version                     int
}

// formsOf reads the stored parse of every body, and what the store's
// parser makes of its bytes now, by body id.
func formsOf(t *testing.T, s *Store) (stored, now map[int64]storedForms) {
	t.Helper()
	rows, err := s.rdb.QueryContext(t.Context(), `SELECT b.bid, b.header_len, b.parsed, b.envelope, b.structure, f.envelope, st.structure, b.forms_version, l.data
		FROM bodies b JOIN forms f ON f.bid = b.bid JOIN structures st ON st.bid = b.bid JOIN blobs l ON l.bid = b.bid ORDER BY b.bid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	stored, now = map[int64]storedForms{}, map[int64]storedForms{}
	for rows.Next() {
		var bid int64
		var f storedForms
		var raw []byte
		if err := rows.Scan(&bid, &f.headerLen, &f.status, &f.envelope, &f.structure, &f.envelopeWire, &f.structureWire, &f.version, &raw); err != nil {
			t.Fatal(err)
		}
		stored[bid] = f
		p, err := parseMessage(s.parser, raw)
		if err != nil {
			t.Fatal(err)
		}
		now[bid] = storedForms{p.headerLen, p.status, p.envelope, p.structure, p.envelopeWire, p.structureWire, s.FormsVersion()}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return stored, now
}

// sameForms reports which fields of a and b differ.
func sameForms(a, b storedForms) string {
	var d []string
	if a.headerLen != b.headerLen || a.status != b.status {
		d = append(d, "header length or status")
	}
	if !bytes.Equal(a.envelope, b.envelope) || !bytes.Equal(a.structure, b.structure) {
		d = append(d, "stored envelope or structure")
	}
	if !bytes.Equal(a.envelopeWire, b.envelopeWire) {
		d = append(d, "envelope form")
	}
	if !bytes.Equal(a.structureWire, b.structureWire) {
		d = append(d, "structure form")
	}
	if a.version != b.version {
		d = append(d, "version")
	}
	return strings.Join(d, ", ")
}

// upgradeAll runs UpgradeForms n bodies a batch until none is left and
// returns how many it stored, failing after 100 batches.
func upgradeAll(t *testing.T, s *Store, n int) int {
	t.Helper()
	total := 0
	for range 100 {
		done, more, err := s.UpgradeForms(t.Context(), n)
		if err != nil {
			t.Fatal(err)
		}
		total += done
		if !more {
			return total
		}
	}
	t.Fatal("bodies of earlier forms left after 100 batches")
	return 0
}

// TestUpgradeFormsOfOldStore: a store made by an earlier cspool (its
// envelopes without date_text) is migrated as it opens, its bodies stay
// of version 0, and UpgradeForms stores for each what the parser makes of
// its bytes now, as an apply does: the envelope's form carries the Date
// field's text. The replicated state (UIDs, flags, modseqs) is the same
// before and after.
func TestUpgradeFormsOfOldStore(t *testing.T) {
	ctx := context.Background()
	s, err := Open(oldFormsStore(t), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.FormsPending(ctx); err != nil || n != 20 {
		t.Fatalf("FormsPending of the old store: %d, %v; want its 20 bodies", n, err)
	}
	before, err := s.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := formsOf(t, s)
	if got := string(stored[15].envelopeWire); !strings.HasPrefix(got, `("Mon, 02 Dec 2024 10:00:00 +0100" "normal"`) {
		t.Fatalf("the old store's envelope form of normal.eml: %.60q, want the date as go-imap wrote it", got)
	}

	if n := upgradeAll(t, s, 7); n != 20 {
		t.Errorf("UpgradeForms stored %d bodies, want 20", n)
	}
	stored, now := formsOf(t, s)
	for bid, f := range stored {
		if d := sameForms(f, now[bid]); d != "" {
			t.Errorf("body %d after the upgrade: %s differ from what the parser makes now", bid, d)
		}
	}
	for bid, want := range map[int64]string{15: `("Mon, 2 Dec 2024 10:00:00 +0100" "normal"`, 20: `("yesterday" "unparseable"`, 7: `("" "empty"`} {
		if got := string(stored[bid].envelopeWire); !strings.HasPrefix(got, want) {
			t.Errorf("body %d's envelope form: %.60q, want it to start %q", bid, got, want)
		}
	}
	if n, err := s.FormsPending(ctx); err != nil || n != 0 {
		t.Errorf("FormsPending after the upgrade: %d, %v; want 0", n, err)
	}
	after, err := s.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(before, after, 10); len(d) != 0 {
		t.Errorf("the upgrade changed the replicated state: %v", d)
	}
	// Nothing is left: another call stores nothing.
	if done, more, err := s.UpgradeForms(ctx, 100); done != 0 || more || err != nil {
		t.Errorf("UpgradeForms of an upgraded store: %d, %v, %v; want 0, false, nil", done, more, err)
	}
}

// TestUpgradeFormsResumes: a daemon stopped after one batch of the
// upgrade, or killed (the store's files copied as they are on disk,
// the write-ahead log with the batch's commit included), starts again
// where the batch left it: the bodies it stored are not parsed again,
// and the rest end as a whole upgrade leaves them.
func TestUpgradeFormsResumes(t *testing.T) {
	ctx := context.Background()
	path := oldFormsStore(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	done, more, err := s.UpgradeForms(ctx, 6)
	if err != nil || done != 6 || !more {
		t.Fatalf("first batch: %d, %v, %v; want 6 stored and more left", done, more, err)
	}
	// Killed: the files as they are now, the store still open.
	killed := filepath.Join(t.TempDir(), "mail.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(killed+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]string{"stopped": path, "killed": killed} {
		s, err := Open(p, mimeform.Parser{})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := s.FormsPending(ctx); err != nil || n != 14 {
			t.Errorf("%s after one batch of 6: %d bodies left, %v; want 14", name, n, err)
		}
		if n := upgradeAll(t, s, 5); n != 14 {
			t.Errorf("%s: the rest of the upgrade stored %d bodies, want the 14 left", name, n)
		}
		stored, now := formsOf(t, s)
		for bid, f := range stored {
			if d := sameForms(f, now[bid]); d != "" {
				t.Errorf("%s: body %d: %s differ from what the parser makes now", name, bid, d)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUpgradeFormsFigures (CSPOOL_BIG=1) gives the figures of
// docs/MAILSTORE.md, "Forms made by an earlier cspool": a store of 10,000
// messages of about 10 KB (benchMessage), encrypted as a device's, every
// body marked as made by version 0, upgraded formsBatch bodies a step as
// the daemon does it: the time in all and the longest write transaction
// (a step's write, which is what an apply or an IMAP change can wait
// for). It states no bound: the figures are measured, not asserted.
func TestUpgradeFormsFigures(t *testing.T) {
	if os.Getenv("CSPOOL_BIG") != "1" {
		t.Skip("set CSPOOL_BIG=1 for the upgrade's figures at 10,000 messages")
	}
	const n, batch = 10000, 500
	ctx := context.Background()
	var key devicedb.Key
	s, err := OpenWith(filepath.Join(t.TempDir(), "mail.db"), Options{Parser: mimeform.Parser{}, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	entries := deliverEntries(n)
	for i := 0; i < n; i += 500 {
		if _, err := s.Apply(ctx, entries[i:i+500], entries[i+499].Pos); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE bodies SET forms_version = 0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// UpgradeForms's two halves, the write timed apart.
	begin := time.Now()
	var longest, writing time.Duration
	steps, total := 0, 0
	for ; steps < 2*n/batch; steps++ {
		redo, err := s.reparse(ctx, s.FormsVersion(), batch)
		if err != nil {
			t.Fatal(err)
		}
		if len(redo) == 0 {
			break
		}
		w := time.Now()
		if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error {
			done, err := storeRedone(ctx, tx, s.FormsVersion(), redo)
			total += done
			return err
		}); err != nil {
			t.Fatal(err)
		}
		longest, writing = max(longest, time.Since(w)), writing+time.Since(w)
	}
	if left, err := s.FormsPending(ctx); err != nil || left != 0 || total != n {
		t.Fatalf("%d upgraded, %d left (%v); want %d and none", total, left, err, n)
	}
	t.Logf("%d messages upgraded in %v (writing %v), %d steps of %d, longest write transaction %v",
		n, time.Since(begin).Round(time.Millisecond), writing.Round(time.Millisecond), steps, batch, longest.Round(time.Millisecond))
}

// TestUpgradeFormsSkipsChanged: a body changed between a step's parse
// and its write is left as the change made it: one parsed again
// meanwhile (its version moved) keeps what that parse stored, and an id
// that holds other bytes now (another digest) is not given the forms of
// the bytes read. The others of the step are stored.
func TestUpgradeFormsSkipsChanged(t *testing.T) {
	ctx := context.Background()
	s, err := Open(oldFormsStore(t), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := s.FormsVersion()
	batch, err := s.reparse(ctx, v, 20)
	if err != nil || len(batch) != 20 {
		t.Fatalf("reparse: %d bodies, %v; want 20", len(batch), err)
	}
	other := bytes.Repeat([]byte{7}, 32)
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE bodies SET envelope = x'01', forms_version = ? WHERE bid = 2", v); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE bodies SET digest = ? WHERE bid = 15", other)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var done int
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) (err error) {
		done, err = storeRedone(ctx, tx, v, batch)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if done != 18 {
		t.Errorf("stored %d bodies of the step, want the 18 not changed", done)
	}
	stored, now := formsOf(t, s)
	if got := stored[2].envelope; !bytes.Equal(got, []byte{1}) {
		t.Errorf("body 2, parsed again meanwhile: its envelope is %.40q, want what that parse stored", got)
	}
	if f := stored[15]; f.version != 0 || bytes.Equal(f.envelopeWire, now[15].envelopeWire) {
		t.Errorf("body 15, other bytes now: version %d, envelope form %.40q; want version 0 and its old form", f.version, f.envelopeWire)
	}
	for bid := range int64(21) {
		if bid == 0 || bid == 2 || bid == 15 {
			continue
		}
		if d := sameForms(stored[bid], now[bid]); d != "" {
			t.Errorf("body %d: %s differ from what the parser makes now", bid, d)
		}
	}
}

// nextParser is mimeform's parser as a later version of it would name
// itself: the same parse under version mimeform.FormsVersion+1.
type nextParser struct{ mimeform.Parser }

func (nextParser) FormsVersion() int { return mimeform.FormsVersion + 1 }

// TestUpgradeFormsNextVersion: bodies stored by the current parser are
// not parsed again by it, and all of them are by the next version's,
// which stamps them with its own; the current parser then leaves those
// (of a later version, not an earlier one) as they are.
func TestUpgradeFormsNextVersion(t *testing.T) {
	ctx := context.Background()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	var l testLog
	var es []Entry
	for i := range 3 {
		es = append(es, l.spool(&command.Command{Kind: command.Deliver, Date: 1700000000000, Body: benchMessage(i)}))
	}
	mustApply(t, s, es...)
	if n, err := s.FormsPending(ctx); err != nil || n != 0 {
		t.Fatalf("FormsPending after applying with the current parser: %d, %v; want 0", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		p                Parser
		pending, version int
	}{{nextParser{}, 3, mimeform.FormsVersion + 1}, {mimeform.Parser{}, 0, mimeform.FormsVersion + 1}} {
		s, err := Open(path, step.p)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := s.FormsPending(ctx); err != nil || n != step.pending {
			t.Errorf("version %d: FormsPending %d, %v; want %d", s.FormsVersion(), n, err, step.pending)
		}
		if n := upgradeAll(t, s, 2); n != step.pending {
			t.Errorf("version %d: upgraded %d bodies, want %d", s.FormsVersion(), n, step.pending)
		}
		stored, _ := formsOf(t, s)
		for bid, f := range stored {
			if f.version != step.version {
				t.Errorf("version %d: body %d is of version %d, want %d", s.FormsVersion(), bid, f.version, step.version)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
