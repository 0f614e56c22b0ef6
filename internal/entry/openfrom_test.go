package entry

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strconv"
	"testing"

	"cspool/internal/command"
	"cspool/internal/keys"
)

// TestOpenFromAsOpen: OpenFrom accepts what Open accepts, giving the same
// entry, command and body, and refuses what it refuses with the same
// error: TestOpenErrors' entries, TestChunkTampering's, the frozen
// vectors' damaged forms, and entries of one to several chunks whose
// command header or padding straddles a chunk's end.
func TestOpenFromAsOpen(t *testing.T) {
	f := newFixture(t)
	cases := openCases(t, f)
	add := func(name string, b []byte, trusted ...keys.PublicKey) {
		cases = append(cases, openCase{name: name, b: b, user: "alice", trusted: trusted})
	}
	seal := func(c *command.Command, o *Options) []byte {
		b, _, err := Seal(c, f.user, f.user.Public(), "alice", o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, n := range []int{1, 100, ChunkSize - 300, ChunkSize - 60, ChunkSize, ChunkSize + 1, 3*ChunkSize + 77, 5 << 20} {
		body := make([]byte, n)
		rand.Read(body)
		add("deliver "+itoa(n), seal(deliver(body), nil), f.user.Public())
		add("deliver unpadded "+itoa(n), seal(deliver(body), &Options{NoPadding: true}), f.user.Public())
		d := sha256.Sum256(body)
		add("checkpoint "+itoa(n), seal(&command.Command{Kind: command.Checkpoint, Position: 7, Digest: d[:], Body: body}, nil), f.user.Public())
	}
	add("no body", seal(&command.Command{Kind: command.CreateMailbox, Mailbox: "Work"}, nil), f.user.Public())
	// A header that ends past the first chunk: many ids.
	ids := make([]command.ID, 5000)
	for i := range ids {
		rand.Read(ids[i][:])
	}
	add("header across chunks", seal(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: ids}, nil), f.user.Public())

	// TestChunkTampering's entries.
	body := make([]byte, 3*ChunkSize)
	rand.Read(body)
	a := seal(deliver(body), &Options{NoPadding: true})
	b := seal(deliver(body), &Options{NoPadding: true})
	chunk := func(e []byte, i int) []byte { return e[headerSize+i*sealedSize : headerSize+(i+1)*sealedSize] }
	swapped := bytes.Clone(a)
	copy(chunk(swapped, 0), chunk(a, 1))
	copy(chunk(swapped, 1), chunk(a, 0))
	foreign := bytes.Clone(a)
	copy(chunk(foreign, 1), chunk(b, 1))
	sigFromB := append(bytes.Clone(a[:len(a)-sigBoxSize]), b[len(b)-sigBoxSize:]...)
	dropped := append(bytes.Clone(a[:headerSize+sealedSize]), a[headerSize+2*sealedSize:]...)
	binary.BigEndian.PutUint64(dropped[len(magic)+1+keyIDSize:], uint64(len(dropped)-headerSize))
	lastCut := bytes.Clone(a[:len(a)-sigBoxSize-1])
	binary.BigEndian.PutUint64(lastCut[len(magic)+1+keyIDSize:], uint64(len(lastCut)-headerSize))
	for name, e := range map[string][]byte{"swapped chunks": swapped, "chunk from another entry": foreign,
		"signature box from another entry": sigFromB, "chunk dropped, length fixed up": dropped, "cut, length fixed up": lastCut} {
		add(name, e, f.user.Public())
	}
	// Every byte of a small entry flipped in turn, and every length cut.
	small := seal(deliver([]byte("a small message")), nil)
	for i := 0; i < len(small); i += 37 {
		e := bytes.Clone(small)
		e[i] ^= 0x10
		add("flipped "+itoa(i), e, f.user.Public())
		add("cut at "+itoa(i), small[:i], f.user.Public())
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, oerr := Open(tc.b, f.user, tc.user, tc.trusted...)
			s, serr := OpenFrom(bytes.NewReader(tc.b), int64(len(tc.b)), f.user, tc.user, tc.trusted...)
			if (oerr == nil) != (serr == nil) || (oerr != nil && oerr.Error() != serr.Error()) {
				t.Fatalf("Open: %v; OpenFrom: %v; want the same", oerr, serr)
			}
			if tc.want != nil && !errors.Is(serr, tc.want) {
				t.Fatalf("OpenFrom: %v; want %v", serr, tc.want)
			}
			if oerr != nil {
				return
			}
			got, err := io.ReadAll(s.Body())
			if err != nil {
				t.Fatal(err)
			}
			full := *s.Cmd
			full.Body = got
			if s.ID != o.ID || !s.Author.Equal(o.Author) || s.User != o.User || !command.Equal(&full, o.Cmd) ||
				s.BodyLen != int64(len(o.Cmd.Body)) || s.BodySHA256 != sha256.Sum256(o.Cmd.Body) {
				t.Fatalf("OpenFrom gave entry %s by %x for %q, %d body bytes; Open %s by %x for %q, %d", s.ID, s.Author.Ed25519, s.User, len(got),
					o.ID, o.Author.Ed25519, o.User, len(o.Cmd.Body))
			}
		})
	}
}

// TestOpenFromChangedSource: the body reader refuses a chunk that is not
// the one verified, though the entry it now reads is authentic too.
func TestOpenFromChangedSource(t *testing.T) {
	f := newFixture(t)
	body := make([]byte, 3*ChunkSize)
	rand.Read(body)
	a, _, err := Seal(deliver(body), f.user, f.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	src := bytes.Clone(a)
	s, err := OpenFrom(bytes.NewReader(src), int64(len(src)), f.user, "alice", f.user.Public())
	if err != nil {
		t.Fatal(err)
	}
	src[headerSize+sealedSize+5] ^= 1
	if _, err := io.ReadAll(s.Body()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading a body whose second chunk changed after it was verified: %v; want ErrCorrupt", err)
	}
}

// TestOpenFromMemory: opening a 20 MB entry from its source and reading
// its body allocates a few chunks, not the entry (Open allocates its
// plaintext).
func TestOpenFromMemory(t *testing.T) {
	f := newFixture(t)
	body := make([]byte, 20<<20)
	rand.Read(body)
	d := sha256.Sum256(body)
	e, _, err := Seal(&command.Command{Kind: command.Checkpoint, Position: 1, Digest: d[:], Body: body}, f.user, f.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := OpenFrom(bytes.NewReader(e), int64(len(e)), f.user, "alice", f.user.Public())
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, s.Body()); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if !bytes.Equal(h.Sum(nil), d[:]) || s.BodySHA256 != d {
		t.Fatal("the body read is not the body sealed")
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("opened and read an entry of %d bytes allocating %d bytes", len(e), alloc)
	if alloc > 1<<20 {
		t.Errorf("opening and reading an entry of %d bytes allocated %d bytes; want under 1 MiB", len(e), alloc)
	}
}

func itoa(n int) string {
	return strconv.Itoa(n)
}

// TestCutShort: every proper prefix of an entry is cut short, with the
// entry's length when its header came whole; the entry itself, bytes that
// are no entry's start and an entry with bytes after it are not.
func TestCutShort(t *testing.T) {
	f := newFixture(t)
	body := make([]byte, 3*ChunkSize+77)
	rand.Read(body)
	for _, o := range []*Options{nil, {NoPadding: true}} {
		b, _, err := Seal(deliver(body), f.user, f.user.Public(), "alice", o)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 1, 4, 5, h.Len() - 1, h.Len(), h.Len() + 1, ChunkSize, len(b) - 1} {
			want, short := CutShort(b[:min(n, MaxHeaderLen)], int64(n))
			if !short {
				t.Fatalf("%d of %d bytes: not cut short", n, len(b))
			}
			if n >= h.Len() && want != int64(len(b)) || n < h.Len() && want != 0 {
				t.Fatalf("%d of %d bytes: length %d", n, len(b), want)
			}
		}
		if want, short := CutShort(b[:MaxHeaderLen], int64(len(b))); short || want != int64(len(b)) {
			t.Fatalf("the whole entry: %d, cut short %v", want, short)
		}
		if _, short := CutShort(b[:MaxHeaderLen], int64(len(b))+1); short {
			t.Fatal("an entry with a byte after it: cut short")
		}
	}
	for _, b := range [][]byte{[]byte("X"), []byte("CSPX"), []byte("<html>"), append([]byte("CSPE\x09"), make([]byte, 60)...)} {
		if _, short := CutShort(b, int64(len(b))); short {
			t.Fatalf("%q: cut short, want it left to Open", b)
		}
	}
}
