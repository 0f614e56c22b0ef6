package api

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

// A device that does not say it reads entry format 3 (one built before it)
// passes such an entry by, so its checkpoint does not hold the message;
// stored, it would delete the entry from the log for every device. Such an
// upload is refused (403, nothing stored or deleted) while the log holds an
// entry of format 3 at or before its position; before the first one, and
// from a device that says it reads them, it is stored as ever. On both
// stores.
func TestCheckpointFromOldReader(t *testing.T) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, false, func(c *Config) {
				if name == "postgres" {
					usePostgres(t, c)
				}
			})
			ctx := testCtx(t)
			c, put := appendWithChained(t, e, 4)
			count := func() int {
				es, _, err := c.Read(ctx, 0, 100, 1<<20, 0)
				if err != nil {
					t.Fatal(err)
				}
				return len(es)
			}
			// Before the entry of format 3: stored, the old way.
			if err := put(1, nil, 0); err != nil {
				t.Fatalf("an old device's checkpoint at 1: %v", err)
			}
			// At or past it: refused, the entry named.
			err := put(4, []uint64{2, 4}, 0)
			if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "format 3 at position 3") || !strings.Contains(err.Error(), "upgrade cspool") {
				t.Fatalf("an old device's checkpoint at 4: %v, want 403 naming position 3", err)
			}
			if n := count(); n != 3 {
				t.Fatalf("%d entries after the refusal, want 3 (2, 3, 4)", n)
			}
			if pos, err := spool.CheckpointPos(ctx, e.api.cfg.Store, "alice"); err != nil || pos != 1 {
				t.Fatalf("checkpoint at %d (%v) after the refusal, want 1", pos, err)
			}
			// A device that reads format 3 compacts as ever, the entry kept
			// because it lists it.
			if err := put(4, []uint64{3}, entry.Version3); err != nil {
				t.Fatalf("a device reading format 3: %v", err)
			}
			if n := count(); n != 1 {
				t.Fatalf("%d entries after compaction, want 1 (3)", n)
			}
		})
	}
}

// appendWithChained appends n deliveries to alice's log, the third sealed
// in entry format 3, and returns alice's client and a function that
// uploads a checkpoint with it, saying it reads entry formats up to reads
// (0: nothing, as devices built before format 3).
func appendWithChained(t *testing.T, e *env, n int) (*Client, func(pos uint64, keep []uint64, reads int) error) {
	t.Helper()
	ctx := testCtx(t)
	spoolC := e.client(t, "", e.spoolK)
	for i := range n {
		b := e.delivery(t, "alice", fmt.Sprint("delivery ", i+1))
		if i == 2 {
			var err error
			b, _, err = entry.Seal(&command.Command{Kind: command.Deliver, Date: 1, Body: []byte("chained")},
				e.spoolK, e.alice.Public(), "alice", &entry.Options{Chains: entry.NewChains(0)})
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, err := spoolC.Append(ctx, "alice", [][]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	c := e.client(t, "alice", e.alice)
	return c, func(pos uint64, keep []uint64, reads int) error {
		data := []byte(fmt.Sprint("checkpoint at ", pos))
		_, err := c.putCheckpoint(ctx, pos, io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))), keep, reads)
		return err
	}
}

// formatCounter counts the store's look-ups of entry formats.
type formatCounter struct {
	*sqlitestore.Store
	n atomic.Int32
}

func (f *formatCounter) FirstOfFormat(ctx context.Context, user string, upTo uint64, v byte) (uint64, error) {
	f.n.Add(1)
	return f.Store.FirstOfFormat(ctx, user, upTo, v)
}

// An old device whose checkpoint was refused uploads another at its next
// sync step, at every delivery: the server reads the log's formats for the
// first refusal only, until a checkpoint stored for the user may have
// deleted the entry it found (what it remembers only refuses: an upload
// before that entry is looked up); an old device's checkpoint is stored again
// once no entry of format 3 is left at or before it.
func TestCheckpointFromOldReaderRemembered(t *testing.T) {
	var fc *formatCounter
	e := newEnv(t, false, func(c *Config) {
		fc = &formatCounter{Store: c.Store.(*sqlitestore.Store)}
		c.Store = fc
	})
	_, put := appendWithChained(t, e, 6)
	for i := range 5 {
		if err := put(4, []uint64{2, 4}, 0); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "format 3 at position 3") {
			t.Fatalf("an old device's checkpoint, try %d: %v, want 403 naming position 3", i+1, err)
		}
	}
	if n := fc.n.Load(); n != 1 {
		t.Fatalf("%d look-ups of the log's formats for five refusals, want 1", n)
	}
	// Before the entry: looked up, and stored.
	if err := put(2, nil, 0); err != nil {
		t.Fatalf("an old device's checkpoint at 2: %v", err)
	}
	// A device that reads format 3 stores one keeping the entry: looked
	// up again, still there.
	if err := put(4, []uint64{3, 4}, entry.Newest); err != nil {
		t.Fatal(err)
	}
	if err := put(5, []uint64{3, 4, 5}, 0); !errors.Is(err, ErrForbidden) {
		t.Fatalf("an old device's checkpoint after a compaction keeping the entry: %v, want 403", err)
	}
	// One that lets it go (the message expunged): the old device's next
	// checkpoint is stored.
	if err := put(5, []uint64{4, 5}, entry.Newest); err != nil {
		t.Fatal(err)
	}
	if err := put(6, []uint64{4, 5, 6}, 0); err != nil {
		t.Fatalf("an old device's checkpoint once no entry of format 3 is left: %v", err)
	}
	// Four of format 3; and one of format 4 for each of the two stored,
	// which found no entry of format 3 at or before them.
	if n := fc.n.Load(); n != 6 {
		t.Fatalf("%d look-ups of the log's formats, want 6", n)
	}
}

// A read of the log that does not say it reads entry format 3 (a device
// built before it) is logged with the user's name, once an hour for each
// user, so an operator sees which users still run one before turning the
// format on; a device of this release says it on every read, and is not.
func TestOldReaderLogged(t *testing.T) {
	var out lockedBuffer
	e := newEnv(t, false, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&out, nil))
	})
	ctx := testCtx(t)
	for range 2 {
		if _, _, err := e.client(t, "alice", e.alice).Read(ctx, 0, 0, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	noted := func(user string) int {
		n := 0
		for l := range strings.SplitSeq(out.String(), "\n") {
			if strings.Contains(l, "without saying it reads entry format 3") && strings.HasSuffix(l, " user="+user) {
				n++
			}
		}
		return n
	}
	if n := noted("alice"); n != 0 {
		t.Fatalf("reads by a device of this release logged %d times", n)
	}
	for range 3 {
		if st, _, msg := oldRead(t, e, "alice", e.alice, 0, 0); st != http.StatusOK {
			t.Fatalf("an old device's read of alice: %d %s", st, msg)
		}
	}
	if st, _, msg := oldRead(t, e, "bob", e.bob, 0, 0); st != http.StatusOK {
		t.Fatalf("an old device's read of bob: %d %s", st, msg)
	}
	if a, b := noted("alice"), noted("bob"); a != 1 || b != 1 {
		t.Fatalf("old devices' reads logged %d times for alice and %d for bob, want once each:\n%s", a, b, out.String())
	}
}

// One step off the old device's path: something between it and the server
// (a proxy, an attacker on the network) adds reads=3 to its refused
// checkpoint upload, to have it stored and the entry of format 3 deleted.
// The parameter is signed with the rest of the query: 401, nothing stored
// or deleted.
func TestReadsParamAddedInTransit(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	c, _ := appendWithChained(t, e, 4)
	resp, _ := e.send(t, rawRequest{method: http.MethodPut, path: "/v1/users/alice/checkpoint", query: "pos=4",
		body: []byte{0}, contentType: CheckpointContentType, key: e.alice, // no kept position, no state
		tamper: func(r *http.Request) { r.URL.RawQuery += "&" + ReadsParam + "=3" }})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("an old device's upload with reads=3 added in transit: %s, want 401", resp.Status)
	}
	if pos, err := spool.CheckpointPos(ctx, e.api.cfg.Store, "alice"); err != nil || pos != 0 {
		t.Fatalf("checkpoint at %d (%v), want none", pos, err)
	}
	if es, _, err := c.Read(ctx, 0, 100, 1<<20, 0); err != nil || len(es) != 4 {
		t.Fatalf("%d entries (%v), want all 4", len(es), err)
	}
}

// oldRead reads user's log after pos as a device built before entry format
// 3 does, without the reads parameter: the status, the positions of the
// entries, and the error's text (a refusal's).
func oldRead(t *testing.T, e *env, user string, key *keys.SecretKey, after uint64, wait int) (int, []uint64, string) {
	t.Helper()
	resp, b, msg := e.sendBody(t, rawRequest{method: http.MethodGet, path: "/v1/users/" + user + "/entries",
		query: fmt.Sprintf("after=%d&wait=%d", after, wait), key: key})
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, msg
	}
	var got []uint64
	er := &entryReader{r: bufio.NewReader(bytes.NewReader(b)), maxEntry: 1 << 20}
	for {
		pos, _, err := er.next()
		if err == io.EOF {
			return resp.StatusCode, got, ""
		}
		if err != nil {
			t.Fatalf("reading %s's log after %d as an old device: %v", user, after, err)
		}
		got = append(got, pos)
	}
}

// A device that does not say it reads entry format 3 (one built before it)
// would pass such an entry by as one of an unknown version, and its message
// would never show there, not even once the device is upgraded. The server
// ends its reads before the first such entry, and refuses a read that would
// start with it (400, upgrade cspool), waiting or not, so the device stops
// there; a device that says it reads format 3 reads every entry. Whether
// the entry is in a response's first chunk or a later one.
func TestOldReaderStopsBeforeFormat3(t *testing.T) {
	for _, chunk := range []int64{0, 1} {
		t.Run(fmt.Sprint("chunk ", chunk), func(t *testing.T) {
			e := newEnv(t, false, func(c *Config) {
				if chunk > 0 {
					c.ChunkBytes = chunk // one entry a chunk
				}
			})
			c, _ := appendWithChained(t, e, 4) // 3 is in format 3
			if st, got, msg := oldRead(t, e, "alice", e.alice, 0, 0); st != http.StatusOK || fmt.Sprint(got) != "[1 2]" {
				t.Fatalf("an old device's read from 0: %d %v %s, want 200 with [1 2]", st, got, msg)
			}
			for _, wait := range []int{0, 5} {
				st, got, msg := oldRead(t, e, "alice", e.alice, 2, wait)
				if st != http.StatusBadRequest || got != nil || !strings.Contains(msg, "position 3") || !strings.Contains(msg, "upgrade cspool") {
					t.Fatalf("an old device's read from 2 (wait %d): %d %v %q, want 400 naming position 3", wait, st, got, msg)
				}
			}
			// Past it (a device that passed it by under an earlier server)
			// it reads on.
			if st, got, msg := oldRead(t, e, "alice", e.alice, 3, 0); st != http.StatusOK || fmt.Sprint(got) != "[4]" {
				t.Fatalf("an old device's read from 3: %d %v %s, want 200 with [4]", st, got, msg)
			}
			es, _, err := c.Read(testCtx(t), 0, 100, 1<<20, 0)
			if err != nil || len(es) != 4 {
				t.Fatalf("a device reading format 3: %d entries, %v; want 4", len(es), err)
			}
		})
	}
}

// ReadersFormat, which --entry-format auto seals by (format 3) and which
// every device's read is told (Cspool-Readers; format 4: the devices write
// commands of version 2): a log made by this store has had every read
// recorded, so it says 4 before any. A read that says less lowers it at once
// on this server, for the hour, and in the store; what the store records
// outlives the server (a restart, another server on it), and a server that
// wants reads for a day says the newer format only once a day of them said
// it.
func TestReadersFormat(t *testing.T) {
	var st *sqlitestore.Store
	e := newEnv(t, false, func(c *Config) { st = c.Store.(*sqlitestore.Store) })
	ctx := testCtx(t)
	c, _ := appendWithChained(t, e, 1)
	want := func(s *Server, format int, when string) {
		t.Helper()
		if got := s.ReadersFormat(ctx, "alice"); got != format {
			t.Fatalf("%s: ReadersFormat = %d, want %d", when, got, format)
		}
		if got := s.SealsVersion3(ctx, "alice"); got != (format >= entry.Version3) {
			t.Fatalf("%s: SealsVersion3 = %v with ReadersFormat %d", when, got, format)
		}
	}
	told := func(format int, when string) {
		t.Helper()
		lr, err := c.ReadLog(ctx, 0, 0, 0, 0)
		if err != nil || lr.Readers != format {
			t.Fatalf("%s: a read was told %d (%v), want %d", when, lr.Readers, err, format)
		}
	}
	read := func(reads int) {
		t.Helper()
		q := "after=0"
		if reads != 0 {
			q += fmt.Sprintf("&reads=%d", reads)
		}
		resp, _, msg := e.sendBody(t, rawRequest{method: http.MethodGet, path: "/v1/users/alice/entries", query: q, key: e.alice})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("a read saying reads=%d: %d %s", reads, resp.StatusCode, msg)
		}
	}
	stored := func(f3, f4 bool, when string) {
		t.Helper()
		got, err := st.ReadersSince(ctx, "alice")
		if err != nil || got.Format3.IsZero() == f3 || got.Format4.IsZero() == f4 {
			t.Fatalf("%s: the store's ReadersSince = %v, %v; want format 3 %v, format 4 %v", when, got, err, f3, f4)
		}
	}
	day := NewServer(Config{Store: st, Users: e.users, NewFormatsAfter: 24 * time.Hour})
	defer day.Shutdown()
	want(e.api, entry.Version4, "a new log, before any read")
	want(day, entry.Version4, "a new log, on a server that wants a day of reads")
	told(entry.Version4, "a read of a new log")

	read(entry.Version3) // a device of the release before format 4
	want(e.api, entry.Version3, "after a read saying reads=3")
	stored(true, false, "after a read saying reads=3")
	told(entry.Version3, "a read after one saying reads=3")

	read(0) // a device of a release before format 3
	want(e.api, entry.Version, "after an old device's read")
	stored(false, false, "after an old device's read")
	// The old device and a new one go on reading: format 2, here for the
	// hour after the old one's read, whatever the store says.
	told(entry.Version, "the next read, the old device's within the hour")
	read(0)
	told(entry.Version, "after the old device's second read")
	// The old device's second read, within the minute, was not written,
	// and the new device's (which starts the time again) was.
	stored(true, true, "after a new device's read")
	// Another server on the store (or this one restarted), which did not
	// see the old device: the newest, from the store.
	other := NewServer(Config{Store: st, Users: e.users})
	defer other.Shutdown()
	want(other, entry.Version4, "on another server")

	// A server started later on the store, which wants a day of reads
	// saying it: format 2 for now; once the times recorded are a day
	// old, format 3 or 4 as they say.
	day = NewServer(Config{Store: st, Users: e.users, NewFormatsAfter: 24 * time.Hour})
	defer day.Shutdown()
	want(day, entry.Version, "with a day to wait")
	for _, c := range []struct{ reads, want int }{{entry.Version3, entry.Version3}, {entry.Version4, entry.Version4}} {
		if _, err := st.NoteReader(ctx, "alice", 0, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := st.NoteReader(ctx, "alice", c.reads, time.Now().Add(-25*time.Hour)); err != nil {
			t.Fatal(err)
		}
		day = NewServer(Config{Store: st, Users: e.users, NewFormatsAfter: 24 * time.Hour})
		defer day.Shutdown()
		want(day, c.want, fmt.Sprintf("once a day of reads said reads=%d", c.reads))
	}
}

// A device of this release meets an entry in a format newer than it reads
// (one a later release seals): it stops before it too, and its hint says
// to upgrade cspool on it, not to check the server's address.
func TestNewerFormatStopsThisRelease(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	c, _ := appendWithChained(t, e, 2)
	next := e.delivery(t, "alice", "from a later release")
	next[4] = entry.Newest + 1
	if _, err := e.api.cfg.Store.Append(ctx, "alice", [][]byte{next}); err != nil {
		t.Fatal(err)
	}
	es, _, err := c.Read(ctx, 0, 100, 1<<20, 0)
	if err != nil || len(es) != 2 {
		t.Fatalf("read from 0: %d entries, %v; want the 2 before it", len(es), err)
	}
	_, _, err = c.Read(ctx, 2, 100, 1<<20, 0)
	if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "position 3, is in entry format 5") {
		t.Fatalf("read from 2: %v, want 400 naming position 3 and format 5", err)
	}
	if h := Hint(err); !strings.Contains(h, "upgrade cspool on this device") {
		t.Fatalf("hint %q, want it to say to upgrade cspool", h)
	}
}

// One step off a device's path: something between it and the server strips
// reads=3 from its read, to have the server take it for an old device, so
// that it seals the user's mail in format 2 and stops the device before
// format 3 entries. The parameter is signed with the rest of the query:
// 401, and the server keeps sealing format 3 for the user.
func TestReadsParamStrippedInTransit(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	c, _ := appendWithChained(t, e, 4)
	if _, _, err := c.Read(ctx, 0, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if !e.api.SealsVersion3(ctx, "alice") {
		t.Fatal("no format 3 after a read saying reads=3")
	}
	resp, _ := e.send(t, rawRequest{method: http.MethodGet, path: "/v1/users/alice/entries", query: "after=2&" + ReadsParam + "=3", key: e.alice,
		tamper: func(r *http.Request) { r.URL.RawQuery = "after=2" }})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a read with reads=3 stripped in transit: %s, want 401", resp.Status)
	}
	if !e.api.SealsVersion3(ctx, "alice") {
		t.Fatal("format 2 after a read whose reads=3 was stripped")
	}
}

// A device's change of command version 2 (an EXPUNGE that waits for
// \Deleted, a DELETE that takes only what its author saw) is sealed in
// entry format 4, which the spool takes from the device. A device of the
// release before (reads=3) would open it as a command of an unknown
// version and pass it by, applying nothing where the others apply the
// change: the server stops it before the entry, with the hint to upgrade,
// and a device that reads format 4 reads on. A checkpoint over the entry
// from a device that does not say it reads format 4 (one that passed it
// by, served by a spool that did not hold it back) is refused, as over
// one of format 3, so that compacting cannot delete the change.
func TestReleaseBeforeStopsBeforeFormat4(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	c, put := appendWithChained(t, e, 2)
	expunge := &command.Command{Kind: command.Expunge, Version: command.Version2, IDs: []command.ID{{1}}, Flags: []string{`\Deleted`}}
	b, _, err := entry.Seal(expunge, e.alice, e.alice.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := entry.VersionOf(b); v != entry.Version4 {
		t.Fatalf("sealed in format %d, want 4", v)
	}
	if _, err := c.Append(ctx, "alice", [][]byte{b}); err != nil {
		t.Fatalf("appending a change in format 4: %v", err)
	}
	read := func(reads int, after uint64) (int, string) {
		resp, _, msg := e.sendBody(t, rawRequest{method: http.MethodGet, path: "/v1/users/alice/entries",
			query: fmt.Sprintf("after=%d&reads=%d", after, reads), key: e.alice})
		return resp.StatusCode, msg
	}
	if st, msg := read(entry.Version3, 2); st != http.StatusBadRequest || !strings.Contains(msg, "position 3, is in entry format 4") ||
		!strings.Contains(msg, "it says reads=3, up to format 3") || !strings.Contains(msg, "upgrade cspool") {
		t.Fatalf("a read from 2 saying reads=3: %d %q, want 400 naming position 3 and format 4", st, msg)
	}
	es, _, err := c.Read(ctx, 2, 100, 1<<20, 0)
	if err != nil || len(es) != 1 {
		t.Fatalf("a read from 2 by this release: %d entries, %v; want 1", len(es), err)
	}
	o, err := entry.Open(es[0].Data, e.alice, "alice", e.alice.Public())
	if err != nil || o.Cmd.Version != command.Version2 || !command.Equal(o.Cmd, expunge) {
		t.Fatalf("the entry read back: %v, %v", o, err)
	}
	for _, reads := range []int{entry.Version3, 0} {
		if err := put(3, []uint64{3}, reads); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "format 4 at position 3") {
			t.Fatalf("a checkpoint at 3 saying reads=%d: %v, want 403 naming format 4 at position 3", reads, err)
		}
	}
	if err := put(3, []uint64{3}, entry.Newest); err != nil {
		t.Fatalf("a checkpoint at 3 saying reads=%d: %v", entry.Newest, err)
	}
}

// A device built before format 4 set up before its user's first mail reads
// a log that does not exist yet: nothing is recorded, and the next read
// that says so, once the first delivery has made the log, is written to
// the store at once, not held back for a minute as one just written: the
// store otherwise said, for that minute, that every device of the user
// reads format 4, and a server started then (or another on the store)
// told the user's other devices so, which stopped the old one.
func TestOldReaderBeforeFirstMail(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	read := func(after int) {
		t.Helper()
		resp, _, msg := e.sendBody(t, rawRequest{method: http.MethodGet, path: "/v1/users/alice/entries",
			query: fmt.Sprintf("after=%d&reads=3", after), key: e.alice})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("a read saying reads=3: %d %s", resp.StatusCode, msg)
		}
	}
	read(0) // no log yet
	if _, err := e.client(t, "", e.spoolK).Append(ctx, "alice", [][]byte{e.delivery(t, "alice", "first")}); err != nil {
		t.Fatal(err)
	}
	read(1)
	got, err := e.store.ReadersSince(ctx, "alice")
	if err != nil || !got.Format4.IsZero() || got.Format3.IsZero() {
		t.Fatalf("the store after the old device's read of the new log: %v, %v; want format 3 kept, format 4 cleared", got, err)
	}
	other := NewServer(Config{Store: e.store, Users: e.users})
	defer other.Shutdown()
	if f := other.ReadersFormat(ctx, "alice"); f != entry.Version3 {
		t.Fatalf("another server on the store says %d, want 3", f)
	}
}
