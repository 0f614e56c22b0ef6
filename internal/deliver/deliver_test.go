package deliver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/userdb"
)

// odd message shapes a mail transfer agent may hand over.
var oddMessages = []struct {
	name string
	msg  []byte
}{
	{"plain CRLF", []byte("From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n")},
	{"bare LF", []byte("Subject: lf\n\nline one\nline two\n")},
	{"NUL bytes", []byte("Subject: nul\r\n\r\na\x00b\x00\x00c\r\n")},
	{"8-bit", []byte("Subject: caf\xc3\xa9\r\n\r\n\xff\xfe\x80 latin-1 \xe9t\xe9\r\n")},
	{"no headers", []byte("just a body, no header, no newline")},
	{"empty", []byte{}},
	{"dots", []byte(".\r\n..\r\n.x\r\n")},
	{"mixed endings", []byte("a\r\nb\nc\rd\r\n")},
}

func TestDeliverStoresBytes(t *testing.T) {
	f := newFixture(t, "alice")
	when := time.UnixMilli(1_700_000_000_123)
	f.d.Now = func() time.Time { return when }
	for i, m := range oddMessages {
		pos, err := f.d.Deliver(testCtx(t), "alice", m.msg)
		if err != nil {
			t.Fatalf("%s: Deliver: %v", m.name, err)
		}
		if pos != uint64(i+1) {
			t.Errorf("%s: position %d, want %d", m.name, pos, i+1)
		}
	}
	got := f.opened(t, "alice")
	if len(got) != len(oddMessages) {
		t.Fatalf("log has %d entries, want %d", len(got), len(oddMessages))
	}
	for i, m := range oddMessages {
		o := got[i]
		if !bytes.Equal(o.Cmd.Body, m.msg) {
			t.Errorf("%s: stored %s, want %s", m.name, short(o.Cmd.Body), short(m.msg))
		}
		if o.Cmd.Date != when.UnixMilli() {
			t.Errorf("%s: date %d, want %d", m.name, o.Cmd.Date, when.UnixMilli())
		}
		if !o.Author.Equal(f.spoolKey.Public()) {
			t.Errorf("%s: author %v, want the spool key", m.name, o.Author)
		}
	}
}

func TestSpoolKeyCannotOpen(t *testing.T) {
	f := newFixture(t, "alice")
	if _, err := f.d.Deliver(testCtx(t), "alice", []byte("secret\r\n")); err != nil {
		t.Fatal(err)
	}
	es, err := f.store.Read(testCtx(t), "alice", 0, 10, 1<<20)
	if err != nil || len(es) != 1 {
		t.Fatalf("Read: %d entries, %v", len(es), err)
	}
	if _, err := entry.Open(es[0].Data, f.spoolKey, "alice", f.spoolKey.Public()); !errors.Is(err, entry.ErrNotForUser) {
		t.Errorf("opening with the spool key: %v, want ErrNotForUser", err)
	}
}

// fakeLog fails appends with a fixed error.
type fakeLog struct{ err error }

func (f fakeLog) Append(context.Context, string, [][]byte) (uint64, error) { return 0, f.err }

func TestDeliverErrorKinds(t *testing.T) {
	alice := mustKey(t)
	users := StaticDirectory{"alice": alice.Public()}
	cases := []struct {
		name   string
		user   string
		size   int
		log    error
		want   Kind
		isTemp bool
	}{
		{"ok", "alice", 10, nil, KindNone, false},
		{"unknown user", "bob", 10, nil, KindUnknownUser, false},
		{"bad name", "a b", 10, nil, KindUnknownUser, false},
		{"empty name", "", 10, nil, KindUnknownUser, false},
		{"over limit", "alice", 1001, nil, KindTooLarge, false},
		{"at limit", "alice", 1000, nil, KindNone, false},
		{"store unavailable", "alice", 10, spool.ErrUnavailable, KindTemporary, true},
		{"store closed", "alice", 10, spool.ErrClosed, KindTemporary, true},
		{"store too large", "alice", 10, spool.ErrTooLarge, KindTooLarge, false},
		{"disk full", "alice", 10, fmt.Errorf("write: %w", syscall.ENOSPC), KindResources, true},
		{"deadline", "alice", 10, context.DeadlineExceeded, KindTemporary, true},
		{"unforeseen", "alice", 10, errors.New("strange"), KindTemporary, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := &Deliverer{Log: fakeLog{c.log}, SpoolKey: mustKey(t), Users: users, MaxMessageBytes: 1000}
			_, err := d.Deliver(testCtx(t), c.user, bytes.Repeat([]byte("x"), c.size))
			if got := KindOf(err); got != c.want {
				t.Errorf("KindOf(%v) = %v, want %v", err, got, c.want)
			}
			if got := IsTemporary(err); got != c.isTemp {
				t.Errorf("IsTemporary(%v) = %v, want %v", err, got, c.isTemp)
			}
			if IsPermanent(err) && IsTemporary(err) {
				t.Errorf("%v is both permanent and temporary", err)
			}
		})
	}
}

// TestUsersDatabaseAsDirectory: the server's users database serves delivery
// as it is, with no adapter: a recipient it does not know is an unknown user
// (550 5.1.1, exit 67), not a failure worth retrying.
func TestUsersDatabaseAsDirectory(t *testing.T) {
	alice := mustKey(t)
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("alice "+alice.Public().String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := userdb.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &Deliverer{Log: fakeLog{}, SpoolKey: mustKey(t), Users: db}
	if _, err := d.Deliver(testCtx(t), "alice", []byte("x\r\n")); err != nil {
		t.Fatalf("delivering to alice: %v", err)
	}
	_, err = d.Deliver(testCtx(t), "carol", []byte("x\r\n"))
	if KindOf(err) != KindUnknownUser || !errors.Is(err, keys.ErrUnknownUser) || IsTemporary(err) {
		t.Errorf("delivering to carol, whom the users file lacks: %v (kind %v), want a permanent unknown user", err, KindOf(err))
	}
}

func TestStaticDirectory(t *testing.T) {
	k := mustKey(t).Public()
	d := StaticDirectory(keys.Users{"alice": k})
	got, err := d.Lookup(testCtx(t), "alice")
	if err != nil || !got.Equal(k) {
		t.Errorf("Lookup(alice) = %v, %v; want the key", got, err)
	}
	if _, err := d.Lookup(testCtx(t), "Alice"); !errors.Is(err, keys.ErrUnknownUser) {
		t.Errorf("Lookup(Alice) = %v, want ErrUnknownUser", err)
	}
}

func TestDeliverAfterStoreClosed(t *testing.T) {
	f := newFixture(t, "alice")
	f.store.Close()
	_, err := f.d.Deliver(testCtx(t), "alice", []byte("x\r\n"))
	if !IsTemporary(err) {
		t.Errorf("Deliver on a closed store: %v, want a temporary error", err)
	}
}
