package deliver

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

// fixture is a spool on disk, a spool key and some users with their keys.
type fixture struct {
	dir      string
	store    *sqlitestore.Store
	spoolKey *keys.SecretKey
	userKeys map[string]*keys.SecretKey
	d        *Deliverer
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustKey(t testing.TB) *keys.SecretKey {
	t.Helper()
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newFixture opens a sqlitestore in a temporary directory and makes users.
func newFixture(t *testing.T, users ...string) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{dir: dir, store: st, spoolKey: mustKey(t), userKeys: map[string]*keys.SecretKey{}}
	dirUsers := StaticDirectory{}
	for _, u := range users {
		k := mustKey(t)
		f.userKeys[u] = k
		dirUsers[u] = k.Public()
	}
	f.d = &Deliverer{Log: st, SpoolKey: f.spoolKey, Users: dirUsers}
	return f
}

// serve starts an LMTP listener on 127.0.0.1 and returns its address.
func serve(t *testing.T, d *Deliverer, opts LMTPOptions) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	l := NewLMTP(d, opts)
	done := make(chan error, 1)
	go func() { done <- l.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v, want nil after Shutdown", err)
		}
	})
	return ln.Addr().String()
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// opened reads user's whole log and opens every entry with the user's key,
// checking that each is a Deliver signed by the spool key.
func (f *fixture) opened(t *testing.T, user string) []*entry.Opened {
	t.Helper()
	return openLog(t, f.store, user, f.userKeys[user], f.spoolKey.Public())
}

func openLog(t *testing.T, st spool.Store, user string, userKey *keys.SecretKey, spoolPub keys.PublicKey) []*entry.Opened {
	t.Helper()
	var out []*entry.Opened
	var after uint64
	for {
		es, err := st.Read(testCtx(t), user, after, 100, 64<<20)
		if err != nil {
			t.Fatalf("reading log of %s: %v", user, err)
		}
		if len(es) == 0 {
			return out
		}
		for _, e := range es {
			if e.Pos != after+1 {
				t.Fatalf("log of %s: position %d follows %d, want dense positions", user, e.Pos, after)
			}
			after = e.Pos
			o, err := entry.Open(e.Data, userKey, user, spoolPub)
			if err != nil {
				t.Fatalf("opening entry %d of %s: %v", e.Pos, user, err)
			}
			if o.Cmd.Kind != command.Deliver {
				t.Fatalf("entry %d of %s is %v, want Deliver", e.Pos, user, o.Cmd.Kind)
			}
			out = append(out, o)
		}
	}
}

// bodies returns the messages in user's log as the LMTP listener received
// them: each entry must start with the Return-Path and Delivered-To fields
// the listener adds, which are cut off.
func (f *fixture) bodies(t *testing.T, user string) [][]byte {
	t.Helper()
	var b [][]byte
	for _, o := range f.opened(t, user) {
		m := lmtpTraceRE.FindIndex(o.Cmd.Body)
		if m == nil {
			t.Fatalf("%s: entry does not start with the Return-Path and Delivered-To fields of an LMTP delivery: %s", user, short(o.Cmd.Body))
		}
		b = append(b, o.Cmd.Body[m[1]:])
	}
	return b
}

// lmtpTraceRE matches the fields the LMTP listener puts in front of a
// message.
var lmtpTraceRE = regexp.MustCompile(`\AReturn-Path: <[^\r\n]*>\r\nDelivered-To: [^\r\n]+\r\n`)

// requireTool finds an external program; without it the test is skipped,
// or fails when CI=true.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI but not found: %v", name, err)
		}
		t.Skipf("%s not installed (install it to run this test; with CI=true this is a failure)", name)
	}
	return p
}

// scripted is a raw LMTP connection for tests that write protocol lines.
type scripted struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialScripted(t *testing.T, addr string) *scripted {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	s := &scripted{t: t, c: c, r: bufio.NewReader(c)}
	s.expect("220 ")
	return s
}

func (s *scripted) write(raw string) {
	s.t.Helper()
	if _, err := s.c.Write([]byte(raw)); err != nil {
		s.t.Fatalf("writing: %v", err)
	}
}

// reply reads one (possibly multi-line) reply and returns its code and last line.
func (s *scripted) reply() (int, string) {
	s.t.Helper()
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("reading reply: %v (got %q)", err, line)
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 {
			s.t.Fatalf("short reply line %q", line)
		}
		if line[3] == '-' {
			continue
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			s.t.Fatalf("bad reply line %q", line)
		}
		return code, line
	}
}

// expect reads a reply and checks that it starts with prefix.
func (s *scripted) expect(prefix string) string {
	s.t.Helper()
	_, line := s.reply()
	if !strings.HasPrefix(line, prefix) {
		s.t.Fatalf("reply %q, want one starting with %q", line, prefix)
	}
	return line
}

// cmd sends one command line and checks the reply's prefix.
func (s *scripted) cmd(line, want string) string {
	s.t.Helper()
	s.write(line + "\r\n")
	return s.expect(want)
}

func short(b []byte) string {
	if len(b) > 80 {
		return fmt.Sprintf("%q... (%d bytes)", b[:80], len(b))
	}
	return fmt.Sprintf("%q", b)
}

type testContext = context.Context

var errUnavailableForTest = fmt.Errorf("test: %w", spool.ErrUnavailable)
