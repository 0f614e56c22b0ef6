package mailstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// placedStore is a store whose forms, structures and messages_listing
// pages lie among the bodies' as a sync leaves them: deliveries of about
// 6 KB in batches, some of them expunged since (free pages).
func placedStore(t *testing.T, path string) (*Store, *testLog) {
	t.Helper()
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	var l testLog
	rng := rand.New(rand.NewPCG(1, 2))
	var all []Entry
	for b := range 12 {
		var batch []Entry
		for i := range 50 {
			pad := make([]byte, 4500)
			for j := range pad {
				pad[j] = "abcdefghijklmnopqrstuvwxyz \r\n"[rng.IntN(29)]
			}
			body := fmt.Sprintf("From: Sender %d <s%d@example.org>\r\nTo: b@example.org\r\nSubject: batch %d message %d\r\nMessage-ID: <%d.%d@example.org>\r\n\r\n%s\r\n", i, b, b, i, b, i, pad)
			batch = append(batch, l.spool(deliverCmd(body)))
		}
		mustApply(t, s, batch...)
		all = append(all, batch...)
	}
	var gone []command.ID
	for i := 0; i < len(all); i += 7 {
		gone = append(gone, all[i].ID)
	}
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: gone}))
	return s, &l
}

// placedRows is every row Relocate writes again: forms and structures
// rows, and the entries of messages_listing.
func placedRows(t *testing.T, s *Store) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		"SELECT bid, hex(envelope) FROM forms ORDER BY bid",
		"SELECT bid, hex(structure) FROM structures ORDER BY bid",
		"SELECT mailbox, uid, flags, keywords, size, date, body FROM messages INDEXED BY messages_listing ORDER BY mailbox, uid",
	} {
		rows, err := s.rdb.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&b, vals...)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// btreePages lists the pages (interior and leaf; overflow pages not) of
// each b-tree Relocate writes, from the plaintext file itself, once the
// WAL is copied into it.
func btreePages(t *testing.T, s *Store) map[string][]uint32 {
	t.Helper()
	if _, err := s.wdb.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.BigEndian.Uint16(file[16:18]))
	out := map[string][]uint32{}
	names := []string{"forms", "structures", "messages_listing"}
	for _, name := range names {
		var root uint32
		if err := s.rdb.QueryRow("SELECT rootpage FROM sqlite_schema WHERE name = ?", name).Scan(&root); err != nil {
			t.Fatalf("root of %s: %v", name, err)
		}
		var walk func(p uint32)
		walk = func(p uint32) {
			page := file[int(p-1)*pageSize : int(p)*pageSize]
			h := 0
			if p == 1 {
				h = 100
			}
			out[name] = append(out[name], p)
			switch page[h] {
			case 10, 13: // leaves
			case 2, 5: // interior: each cell starts with its left child
				n := int(binary.BigEndian.Uint16(page[h+3:]))
				for i := range n {
					off := int(binary.BigEndian.Uint16(page[h+12+2*i:]))
					walk(binary.BigEndian.Uint32(page[off:]))
				}
				walk(binary.BigEndian.Uint32(page[h+8:]))
			default:
				t.Fatalf("%s: page %d is of type %d, not a b-tree page", name, p, page[h])
			}
		}
		walk(root)
		slices.Sort(out[name])
	}
	return out
}

// span is how many pages of the file lie from the lowest to the highest
// of pages, the root left out (a table keeps its root page).
func span(pages []uint32, root uint32) int {
	var rest []uint32
	for _, p := range pages {
		if p != root {
			rest = append(rest, p)
		}
	}
	if len(rest) == 0 {
		return 0
	}
	return int(rest[len(rest)-1]-rest[0]) + 1
}

func rootOf(t *testing.T, s *Store, name string) uint32 {
	t.Helper()
	var root uint32
	if err := s.rdb.QueryRow("SELECT rootpage FROM sqlite_schema WHERE name = ?", name).Scan(&root); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestRelocatePlacesTogether: the pages of forms, structures and
// messages_listing, spread among the bodies' after a sync, follow each
// other after Relocate, every row as it was, the schema as it was, and
// the store applies and reads as before.
func TestRelocatePlacesTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, l := placedStore(t, emptyStoreFile(t))
	rows, state := placedRows(t, s), dump(t, s)
	schema := func() string {
		var b strings.Builder
		r, err := s.rdb.Query("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY name")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for r.Next() {
			var a, b2, c, d string
			if err := r.Scan(&a, &b2, &c, &d); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&b, a, b2, c, d)
		}
		return b.String()
	}
	before := btreePages(t, s)
	for name, pages := range before {
		if sp := span(pages, rootOf(t, s, name)); sp < 3*len(pages) {
			t.Fatalf("before Relocate, %s's %d pages span %d: the test's mailbox does not spread them", name, len(pages), sp)
		}
	}
	var free int
	if err := s.rdb.QueryRow("PRAGMA freelist_count").Scan(&free); err != nil || free == 0 {
		t.Fatalf("free pages before Relocate: %d, %v; the test wants some", free, err)
	}
	if unplaced, bodies, err := s.Placement(ctx); err != nil || unplaced < bodies || bodies == 0 {
		t.Fatalf("Placement before Relocate: %d unplaced of %d bodies, %v; want all of them", unplaced, bodies, err)
	}
	schemaBefore := schema()

	// The relocation's WAL is over the bound, as at 100,000 messages:
	// its checkpoint runs after the commit, on the writer's connection.
	s.walLimit = 64 << 10
	if _, err := s.Relocate(ctx); err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	if fi, err := os.Stat(s.Path() + "-wal"); err != nil {
		t.Fatal(err)
	} else if fi.Size() > s.walLimit {
		t.Fatalf("the WAL after Relocate: %d bytes; want it cut by its bound", fi.Size())
	}
	after := btreePages(t, s)
	for name, pages := range after {
		if len(pages) < 3 {
			t.Fatalf("%s has %d pages: too few to tell", name, len(pages))
		}
		if sp := span(pages, rootOf(t, s, name)); sp != len(pages)-1 && sp != len(pages) {
			t.Errorf("after Relocate, %s's %d pages span %d pages of the file (before: %d pages over %d); want them one after another",
				name, len(pages), sp, len(before[name]), span(before[name], 0))
		}
	}
	for name, pages := range after {
		t.Logf("%s: %d pages over %d of the file before Relocate, %d over %d after", name,
			len(before[name]), span(before[name], 0), len(pages), span(pages, 0))
	}
	if got := placedRows(t, s); got != rows {
		t.Fatalf("rows changed by Relocate")
	}
	if d := Diff(state, dump(t, s), 10); d != nil {
		t.Fatalf("state changed by Relocate: %v", d)
	}
	if got := schema(); got != schemaBefore {
		t.Fatalf("schema changed by Relocate:\n%s\nwant\n%s", got, schemaBefore)
	}
	var check string
	if err := s.rdb.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check after Relocate: %q, %v", check, err)
	}
	if unplaced, bodies, err := s.Placement(ctx); err != nil || unplaced != 0 || bodies == 0 {
		t.Fatalf("Placement after Relocate: %d unplaced of %d bodies, %v; want none", unplaced, bodies, err)
	}
	// The store goes on: a delivery applies (its forms row, its undo
	// triggers), and FETCH reads it with the rest.
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("after"))))
	n := 0
	if err := s.FetchForms(ctx, InboxID(), UIDSet{{Start: 1, Stop: 0}}, WantEnvelopeWire|WantStructureWire|WantListing, func(m *Message) error {
		if len(m.EnvelopeWire) == 0 || len(m.StructureWire) == 0 {
			return fmt.Errorf("UID %d: no forms", m.UID)
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := len(uidsOf(t, s, "INBOX")); n != want {
		t.Fatalf("FETCH after Relocate gave %d messages; want %d", n, want)
	}
	if unplaced, _, err := s.Placement(ctx); err != nil || unplaced != 1 {
		t.Fatalf("Placement after one more delivery: %d unplaced, %v; want 1", unplaced, err)
	}

	// More mail, and a Relocate of the rows stored since, 60 body ids a
	// transaction: the rows placed before stay, each transaction's
	// follow each other (but for the pages of the b-tree's edge the
	// rows are inserted back at, which SQLite keeps where they were:
	// up to two runs a transaction, against one for every page or two
	// before).
	for b := range 4 {
		var batch []Entry
		for i := range 50 {
			batch = append(batch, l.spool(deliverCmd(simpleMessage(fmt.Sprintf("more %d %d %s", b, i, strings.Repeat("x", 3000))))))
		}
		mustApply(t, s, batch...)
	}
	rows = placedRows(t, s)
	placed := btreePages(t, s)
	s.relocateChunk = 60
	r, err := s.Relocate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Transactions != 1+4 {
		t.Errorf("Relocate of 201 bodies, 60 a transaction, took %d transactions; want 5 (the index's and four)", r.Transactions)
	}
	again := btreePages(t, s)
	for _, name := range []string{"forms", "structures"} {
		if n := runs(again[name]); n > 3+2*4 {
			t.Errorf("%s's %d pages lie in %d runs after a Relocate in four transactions (before it: %d in %d); want at most 11",
				name, len(again[name]), n, len(placed[name]), runs(placed[name]))
		}
		t.Logf("%s: %d pages in %d runs before the second Relocate, %d in %d after", name, len(placed[name]), runs(placed[name]), len(again[name]), runs(again[name]))
	}
	if got := placedRows(t, s); got != rows {
		t.Fatalf("rows changed by the second Relocate")
	}
	if unplaced, _, err := s.Placement(ctx); err != nil || unplaced != 0 {
		t.Fatalf("Placement after the second Relocate: %d unplaced, %v; want 0", unplaced, err)
	}
}

// runs counts the runs of consecutive page numbers in sorted pages.
func runs(pages []uint32) int {
	n := 0
	for i, p := range pages {
		if i == 0 || p != pages[i-1]+1 {
			n++
		}
	}
	return n
}

// TestRelocateAllOrNothing fails Relocate midway with a real failure: the
// file full (SQLite's max_page_count on the writer, what a full disk
// does) at several points of the transaction, and the context cancelled.
// The file keeps its rows and its pages where they were, and a Relocate
// after it places them.
func TestRelocateAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := placedStore(t, emptyStoreFile(t))
	rows := placedRows(t, s)
	pages := btreePages(t, s)
	var count int64
	if err := s.wdb.QueryRow("PRAGMA page_count").Scan(&count); err != nil {
		t.Fatal(err)
	}
	// Each transaction is all or nothing: the index's is one, the rows'
	// (fewer than relocateChunk) the next.
	unchanged := func(what string) {
		t.Helper()
		if got := placedRows(t, s); got != rows {
			t.Fatalf("%s: rows changed", what)
		}
		var n int
		if err := s.rdb.QueryRow("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'relocation_%'").Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s: %d relocation tables left, %v", what, n, err)
		}
		var check string
		if err := s.rdb.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
			t.Fatalf("%s: integrity_check %q, %v", what, check, err)
		}
		if unplaced, bodies, err := s.Placement(ctx); err != nil || unplaced < bodies {
			t.Fatalf("%s: %d of %d bodies unplaced, %v: the rows' transaction committed", what, unplaced, bodies, err)
		}
		got := btreePages(t, s)
		for _, name := range []string{"forms", "structures"} {
			if !slices.Equal(got[name], pages[name]) {
				t.Fatalf("%s: %s's pages moved", what, name)
			}
		}
	}
	// Relocate grows the file by about the pages it places: fail it
	// early, a third and two thirds of the way.
	var placed int64
	for _, p := range pages {
		placed += int64(len(p))
	}
	for _, room := range []int64{1, placed / 3, placed * 2 / 3} {
		if _, err := s.wdb.Exec(fmt.Sprintf("PRAGMA max_page_count = %d", count+room)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Relocate(ctx); err == nil {
			t.Fatalf("Relocate with %d pages of room: no error", room)
		}
		unchanged(fmt.Sprintf("a file full after %d more pages", room))
	}
	if _, err := s.wdb.Exec("PRAGMA max_page_count = 4294967294"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Relocate(cctx); err == nil {
		t.Fatal("Relocate with its context cancelled: no error")
	}
	unchanged("cancelled")
	if _, err := s.Relocate(ctx); err != nil {
		t.Fatalf("Relocate after the failures: %v", err)
	}
	if got := placedRows(t, s); got != rows {
		t.Fatal("rows changed by Relocate")
	}
	var grown int64
	if err := s.wdb.QueryRow("PRAGMA page_count").Scan(&grown); err != nil {
		t.Fatal(err)
	}
	if grown-count <= placed*2/3 {
		t.Fatalf("Relocate grew the file by %d pages, for %d placed: the failures above did not all strike inside it", grown-count, placed)
	}
}

// TestRelocateCrash kills a process (this test's binary again) in the
// middle of Relocate, with SIGKILL at a random moment, several times:
// each time the file opens with every row, and is whole.
func TestRelocateCrash(t *testing.T) {
	if path := os.Getenv("CSPOOL_RELOCATE_CHILD"); path != "" {
		s, err := Open(path, mimeform.Parser{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("open")
		// Every body unplaced again before each Relocate, which moves
		// them 100 ids a transaction: the kill strikes anywhere in it.
		s.relocateChunk = 100
		for range 100 {
			if _, err := s.wdb.Exec("UPDATE local SET relocated_bid = 0"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			if _, err := s.Relocate(context.Background()); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		os.Exit(0)
	}
	t.Parallel()
	path := emptyStoreFile(t)
	s, _ := placedStore(t, path)
	rows, state := placedRows(t, s), dump(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRelocateCrash$")
		cmd.Env = append(os.Environ(), "CSPOOL_RELOCATE_CHILD="+path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The child says "open" once the store is open, then relocates
		// until killed (or a hundred times).
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		cmd.Process.Kill()
		err = cmd.Wait()
		t.Logf("run %d: %v", i, err)
		if ee, ok := err.(*exec.ExitError); (ok && ee.ExitCode() == 2) || line != "open\n" {
			t.Fatalf("the relocating process failed: %v, %q: %s", err, line, stderr.String())
		}
		s, err := Open(path, mimeform.Parser{})
		if err != nil {
			t.Fatalf("opening after the kill: %v", err)
		}
		var check string
		if err := s.rdb.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
			t.Fatalf("integrity_check after the kill: %q, %v", check, err)
		}
		if got := placedRows(t, s); got != rows {
			t.Fatal("rows changed by a killed Relocate")
		}
		if d := Diff(state, dump(t, s), 10); d != nil {
			t.Fatalf("state changed by a killed Relocate: %v", d)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSchema22Placement: a database of version 21 opens with every body
// unplaced, and Relocate places them.
func TestSchema22Placement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("a"))), l.spool(deliverCmd(simpleMessage("b"))), l.spool(deliverCmd(simpleMessage("c"))))
	s = reopenedFrom(t, s, path, 21)
	if unplaced, bodies, err := s.Placement(ctx); err != nil || unplaced != 3 || bodies != 3 {
		t.Fatalf("Placement of a database of version 21: %d unplaced of %d, %v; want 3 of 3", unplaced, bodies, err)
	}
	if _, err := s.Relocate(ctx); err != nil {
		t.Fatal(err)
	}
	if unplaced, bodies, err := s.Placement(ctx); err != nil || unplaced != 0 || bodies != 3 {
		t.Fatalf("Placement after Relocate: %d unplaced of %d, %v; want 0 of 3", unplaced, bodies, err)
	}
}
