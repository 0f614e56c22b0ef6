package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/api"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/pgstore/pgtest"
	"cspool/internal/userdb"
)

// pgSetup is a fresh database with users in cspool_users and a spool key.
type pgSetup struct {
	dsn      string
	dir      string
	spoolK   *keys.SecretKey
	spoolSec string
	users    map[string]*keys.SecretKey
}

func newPGSetup(t *testing.T, names ...string) *pgSetup {
	t.Helper()
	return newPGSetupOn(t, pgtest.Database(t), names...)
}

// newPGSetupOn is newPGSetup on the database at dsn.
func newPGSetupOn(t *testing.T, dsn string, names ...string) *pgSetup {
	t.Helper()
	s := &pgSetup{dsn: dsn, dir: t.TempDir(), spoolK: mustKey(t), users: map[string]*keys.SecretKey{}}
	s.spoolSec = filepath.Join(s.dir, "spool.sec")
	if err := keys.WriteFiles(s.spoolK, s.spoolSec, filepath.Join(s.dir, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	udb, err := userdb.OpenPG(ctx, s.dsn, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	udb.Close()
	st, err := pgstore.Open(ctx, s.dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, n := range names {
		s.users[n] = mustKey(t)
		if _, err := st.Pool().Exec(ctx, "INSERT INTO cspool_users (name, public_key) VALUES ($1, $2)", n, s.users[n].Public().String()); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// start runs a server on the database with an LMTP listener; it returns the
// process and its LMTP address.
func (s *pgSetup) start(t *testing.T, bin string, extra ...string) (*serverProc, string) {
	t.Helper()
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := append([]string{"--store", "postgres", "--dsn", s.dsn, "--spool-dir", s.dir,
		"--spool-key", s.spoolSec, "--lmtp", lmtpAddr}, extra...)
	return startServer(t, bin, args...), lmtpAddr
}

// lmtpSend delivers one message and returns the recipients that got 250 and
// the first non-2xx code seen (0 if none).
func lmtpSend(lc *smtp.Client, rcpts []string, msg string) (ok []string, code int, err error) {
	if err := lc.Mail("sender@example.net", nil); err != nil {
		return nil, codeOf(err), err
	}
	var accepted []string
	for _, r := range rcpts {
		if err := lc.Rcpt(r+"@example.org", nil); err != nil {
			code = codeOf(err)
			continue
		}
		accepted = append(accepted, r)
	}
	if len(accepted) == 0 {
		lc.Reset()
		return nil, code, nil
	}
	w, err := lc.Data()
	if err != nil {
		return nil, codeOf(err), err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return nil, 0, err
	}
	_, err = w.CloseWithLMTPResponse()
	var le smtp.LMTPDataError
	if err != nil && !errors.As(err, &le) {
		return nil, codeOf(err), err
	}
	for _, r := range accepted {
		if e := le[r+"@example.org"]; e != nil {
			code = e.Code
			continue
		}
		ok = append(ok, r)
	}
	return ok, code, nil
}

func codeOf(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func dialLMTP(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	lc := smtp.NewClientLMTP(conn)
	if err := lc.Hello("test.example.net"); err != nil {
		t.Fatal(err)
	}
	return lc
}

// tokens opens every entry of user's log with the user's key and returns
// the token in each message by position, checking positions are dense.
func (s *pgSetup) tokens(t *testing.T, st spool.Store, user string) map[string][]uint64 {
	t.Helper()
	ctx := context.Background()
	out := map[string][]uint64{}
	after := uint64(0)
	for i := 0; i < 10_000; i++ {
		es, err := st.Read(ctx, user, after, 100, 16<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			if e.Pos != after+1 {
				t.Fatalf("%s: position %d after %d: not dense", user, e.Pos, after)
			}
			after = e.Pos
			o, err := entry.Open(e.Data, s.users[user], user, s.spoolK.Public())
			if err != nil {
				t.Fatalf("%s: opening entry %d: %v", user, e.Pos, err)
			}
			body := string(o.Cmd.Body)
			i := strings.Index(body, "token=")
			if i < 0 {
				t.Fatalf("%s: entry %d holds no token", user, e.Pos)
			}
			tok := strings.Fields(body[i:])[0]
			out[tok] = append(out[tok], e.Pos)
		}
	}
	return out
}

// TestPostgresTwoServers runs two server processes on one database:
// concurrent LMTP deliveries through both to the same users leave every
// acknowledged message exactly once at dense positions, and a long poll
// through one server returns within 1 s of a delivery through the other.
func TestPostgresTwoServers(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	users := []string{"alice", "bob", "carol"}
	s := newPGSetup(t, users...)
	bin := buildServerBinary(t)
	a, lmtpA := s.start(t, bin, "--users-table")
	_, lmtpB := s.start(t, bin, "--users-table")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Long poll on A, delivery on B.
	ac, err := api.NewClient(a.url, "alice", s.users["alice"], nil)
	if err != nil {
		t.Fatal(err)
	}
	lb := dialLMTP(t, lmtpB)
	for round := 0; round < 3; round++ {
		_, head, err := ac.Read(ctx, 1<<40, 1, 0, 0)
		if err != nil {
			t.Fatalf("reading alice's head through A: %v", err)
		}
		got := make(chan time.Time, 1)
		go func() {
			es, _, err := ac.Read(ctx, head, 10, 1<<20, 30*time.Second)
			if err != nil || len(es) == 0 {
				t.Errorf("long poll through A: %d entries, %v", len(es), err)
			}
			got <- time.Now()
		}()
		time.Sleep(300 * time.Millisecond)
		ok, code, err := lmtpSend(lb, []string{"alice"}, fmt.Sprintf("Subject: poll\r\n\r\ntoken=poll-%d\r\n", round))
		acked := time.Now()
		if err != nil || len(ok) != 1 {
			t.Fatalf("delivery through B: %v %d %v", ok, code, err)
		}
		if d := (<-got).Sub(acked); d > time.Second {
			t.Errorf("round %d: long poll through A returned %v after the delivery through B, want under 1 s", round, d)
		}
	}
	lb.Close()

	// 200 messages over 4 connections, two per server, each to 1-3 users.
	const conns, perConn = 4, 50
	var (
		mu    sync.Mutex
		acked = map[string]map[string]bool{} // user -> token
		fails []string
		wg    sync.WaitGroup
	)
	for _, u := range users {
		acked[u] = map[string]bool{}
	}
	for c := 0; c < conns; c++ {
		addr := lmtpA
		if c%2 == 1 {
			addr = lmtpB
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc := dialLMTP(t, addr)
			defer lc.Close()
			for i := 0; i < perConn; i++ {
				tok := fmt.Sprintf("token=c%d-m%d", c, i)
				rcpts := users[:1+(c+i)%3]
				if i%2 == 1 {
					rcpts = users[(c+i)%3:]
				}
				msg := fmt.Sprintf("Subject: load\r\n\r\n%s\r\n%s\r\n", tok, bytes.Repeat([]byte("x"), 2000))
				ok, code, err := lmtpSend(lc, rcpts, msg)
				mu.Lock()
				for _, u := range ok {
					acked[u][tok] = true
				}
				if err != nil || code != 0 {
					fails = append(fails, fmt.Sprintf("%s: code %d %v", tok, code, err))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(fails) > 0 {
		t.Errorf("%d deliveries failed, first: %s", len(fails), fails[0])
	}

	st, err := pgstore.Open(ctx, s.dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	total := 0
	for _, u := range users {
		got := s.tokens(t, st, u)
		for tok, ps := range got {
			if len(ps) > 1 {
				t.Errorf("%s: %s stored %d times, at %v", u, tok, len(ps), ps)
			}
		}
		for tok := range acked[u] {
			if len(got[tok]) == 0 {
				t.Errorf("%s: acknowledged %s missing", u, tok)
			}
		}
		total += len(acked[u])
	}
	if total < conns*perConn {
		t.Errorf("%d acknowledged recipient deliveries, want at least %d", total, conns*perConn)
	}
}

// TestPostgresRestartLMTP stops PostgreSQL under a server: LMTP answers 4xx
// and HTTP appends 503 while it is down, deliveries succeed again once it is
// back, without restarting the server, and nothing acknowledged is lost.
func TestPostgresRestartLMTP(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	cluster := pgtest.PrivateCluster(t)
	s := newPGSetupOn(t, cluster.DSN())
	alice := mustKey(t)
	s.users["alice"] = alice
	usersPath := filepath.Join(s.dir, "users")
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice})
	bin := buildServerBinary(t)
	p, lmtpAddr := s.start(t, bin, "--users", usersPath)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sc, err := api.NewClient(p.url, "", s.spoolK, nil)
	if err != nil {
		t.Fatal(err)
	}

	lc := dialLMTP(t, lmtpAddr)
	defer lc.Close()
	var acked []string
	send := func(tok string) int {
		ok, code, err := lmtpSend(lc, []string{"alice"}, "Subject: r\r\n\r\ntoken="+tok+"\r\n")
		if err != nil && code == 0 {
			t.Fatalf("LMTP %s: %v", tok, err)
		}
		if len(ok) == 1 {
			acked = append(acked, "token="+tok)
		}
		return code
	}
	for i := 0; i < 20; i++ {
		if code := send(fmt.Sprintf("before-%d", i)); code != 0 {
			t.Fatalf("delivery before the stop: code %d", code)
		}
	}
	cluster.Stop()
	for i := 0; i < 3; i++ {
		start := time.Now()
		code := send(fmt.Sprintf("down-%d", i))
		if code < 400 || code >= 500 {
			t.Errorf("delivery while PostgreSQL is down: code %d, want 4xx", code)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("delivery while PostgreSQL is down took %v", d)
		}
	}
	if _, err := sc.Append(ctx, "alice", [][]byte{sealDelivery(t, s.spoolK, alice.Public(), "alice", "x")}); !errors.Is(err, spool.ErrUnavailable) {
		t.Errorf("HTTP append while PostgreSQL is down: %v, want 503 (ErrUnavailable)", err)
	}
	cluster.Start()
	var code int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if code = send("after-first"); code == 0 {
			break
		}
	}
	if code != 0 {
		t.Fatalf("delivery after PostgreSQL came back: code %d", code)
	}
	for i := 0; i < 20; i++ {
		if code := send(fmt.Sprintf("after-%d", i)); code != 0 {
			t.Fatalf("delivery after the restart: code %d", code)
		}
	}
	st, err := pgstore.Open(ctx, s.dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got := s.tokens(t, st, "alice")
	for _, tok := range acked {
		if len(got[tok]) != 1 {
			t.Errorf("acknowledged %s stored %d times", tok, len(got[tok]))
		}
	}
	if len(acked) < 41 {
		t.Errorf("%d deliveries acknowledged, want at least 41", len(acked))
	}
}

// TestPostgresUsersFilesKeyMoved: servers of one PostgreSQL store, each
// with a users file of its own. A second server given a file whose keys
// of alice and bob are swapped, and the first one restarted on it, exit
// 77 (as cspool deliver) naming the line and both users; each started, with no table of its
// own to compare the file with, and bob's key read alice's log through
// it. cspool deliver straight into the store with that file exits 77; it
// sealed alice's mail to bob's key.
func TestPostgresUsersFilesKeyMoved(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	s := newPGSetup(t)
	alice, bob := mustKey(t), mustKey(t)
	usersA, usersB := filepath.Join(s.dir, "users-a"), filepath.Join(s.dir, "users-b")
	writeUsersFile(t, usersA, map[string]*keys.SecretKey{"alice": alice, "bob": bob})
	bin := buildServerBinary(t)
	a, _ := s.start(t, bin, "--users", usersA)
	if err := os.WriteFile(usersB, []byte("alice "+bob.Public().String()+"\nbob "+alice.Public().String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runExitStdin(t, s.dir, nil, []byte("Subject: hi\r\n\r\nfor alice\r\n"), bin, "deliver", "--store", "postgres", "--dsn", s.dsn,
		"--users", usersB, "--user", "alice", "--spool-key", s.spoolSec)
	if code != exNoPerm {
		t.Fatalf("cspool deliver to alice with the swapped file: exit %d, want %d\n%s%s", code, exNoPerm, stdout, stderr)
	}
	saysAll(t, stderr, "users file "+usersB+": line 1: user \"alice\" has the key user \"bob\" was last given", "cspool: hint: give each user the key its own gen-keys printed, in --users")
	for _, tc := range []struct{ what, users string }{{"server B on the swapped file", usersB}, {"server A restarted on it", usersA}} {
		if tc.users == usersA {
			a.stop(t)
			if err := os.Rename(usersB, usersA); err != nil {
				t.Fatal(err)
			}
		}
		code, stdout, stderr = runExitStdin(t, s.dir, nil, nil, bin, "server", "--store", "postgres", "--dsn", s.dsn, "--users", tc.users,
			"--spool-dir", s.dir, "--spool-key", s.spoolSec, "--port", "0")
		if code != exNoPerm {
			t.Fatalf("%s: exit %d, want %d\n%s%s", tc.what, code, exNoPerm, stdout, stderr)
		}
		saysAll(t, stderr, "users file "+tc.users+": line 1: user \"alice\" has the key user \"bob\" was last given", "is still listed (line 2)",
			"cspool: hint: give each user the key its own gen-keys printed, in the users file of every server of the store")
	}
}
