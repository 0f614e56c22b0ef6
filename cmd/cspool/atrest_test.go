package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/devicedb"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// imaplibLeak searches, makes a folder, copies a message into it and sets
// a keyword, as a mail client would; it prints the SEARCH answers.
const imaplibLeak = `
import imaplib, sys
host, port, user, password, body, subj, folder, kw = sys.argv[1:9]
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
M.select("INBOX")
for crit in (("BODY", body), ("TEXT", body), ("SUBJECT", subj)):
    typ, data = M.search(None, *crit)
    print("SEARCH %s %s" % (crit[0], data[0].decode()))
typ, data = M.create(folder)
assert typ == "OK", data
typ, data = M.copy("1", folder)
assert typ == "OK", data
typ, data = M.store("1", "+FLAGS", "(%s)" % kw)
assert typ == "OK", data
M.logout()
print("DONE")
`

// grepTree returns, for each token, the files under root whose bytes hold
// it.
func grepTree(t *testing.T, root string, tokens []string) map[string][]string {
	t.Helper()
	hits := map[string][]string{}
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("reading %s: %v", p, err)
			return nil
		}
		lower := bytes.ToLower(b)
		for _, tok := range tokens {
			if bytes.Contains(lower, []byte(strings.ToLower(tok))) {
				hits[tok] = append(hits[tok], p)
			}
		}
		return nil
	})
	return hits
}

// TestPlaintextLeak delivers messages with unique tokens in the body, the
// subject and the addresses, syncs them to a real daemon, searches them,
// makes a folder and sets a keyword with tokens of their own over IMAP,
// queues a message with a token in the outbox, and then looks for every
// token in every file under the device's directory (database, WAL, SHM,
// outbox, password, lock, control socket) and in the daemon's TMPDIR,
// while it runs and after it stops: none may be there.
func TestPlaintextLeak(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	dir, devDir, tmp := t.TempDir(), t.TempDir(), t.TempDir()
	env := append(os.Environ(), "TMPDIR="+tmp, "CREDENTIALS_DIRECTORY=")
	alice, spoolK := mustKey(t), mustKey(t)
	for name, k := range map[string]*keys.SecretKey{"alice": alice, "spool": spoolK} {
		if err := keys.WriteFiles(k, filepath.Join(dir, name+".sec"), filepath.Join(dir, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tok := func(what string) string { return fmt.Sprintf("%stok%d", what, time.Now().UnixNano()%1e9) }
	body, subj, from, to := tok("body"), tok("subj"), tok("from"), tok("to")
	folder, kw, out := tok("folder"), tok("kw"), tok("outbox")
	tokens := []string{body, subj, from, to, folder, kw, out}

	httpPort, imapPort, smtpPort := freePort(t), freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(httpPort))
	waitHealthy(t, url, server)
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("From: Sender <%s@example.org>\r\nTo: %s@example.net\r\nSubject: hello %s %d\r\n\r\nThe secret word is %s, number %d.\r\n",
			from, to, subj, i, body, i)
		if err := os.WriteFile(filepath.Join(dir, "message"), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		runCmd(t, dir, env, "message", bin, "deliver", "--user=alice", "--user-key=alice.pub", "--spool-key=spool.sec")
	}
	db := filepath.Join(devDir, "alice.db")
	deadRelay := freePort(t) // nothing listens: the message stays queued
	daemon := startProc(t, "cspool imap-server", dir, env, bin, "imap-server", "--user", "alice",
		"--user-key", "alice.sec", "--user-public-key", "alice.pub", "--spool-key", "spool.pub", "--db", db,
		"--port", fmt.Sprint(imapPort), "--status-addr", "", "--spool-server", url,
		"--smtp-port", fmt.Sprint(smtpPort), "--relay", fmt.Sprintf("smtp://127.0.0.1:%d", deadRelay),
		"--identity", "alice@example.org", "--relay-backoff", "1h")
	daemon.waitOutput(t, "SMTP settings", 30*time.Second)
	pwBytes, err := os.ReadFile(db + ".password")
	if err != nil {
		t.Fatalf("the generated password: %v", err)
	}
	pw := strings.TrimSpace(string(pwBytes))
	fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", pw, 3)

	got := runCmd(t, dir, env, "", python, "-c", imaplibLeak, "127.0.0.1", fmt.Sprint(imapPort), "alice", pw, body, subj, folder, kw)
	for _, want := range []string{"SEARCH BODY 1 2 3", "SEARCH TEXT 1 2 3", "SEARCH SUBJECT 1 2 3", "DONE"} {
		if !strings.Contains(got, want) {
			t.Fatalf("imaplib: want %q in\n%s", want, got)
		}
	}
	outMsg := filepath.Join(dir, "out.eml")
	if err := os.WriteFile(outMsg, []byte("From: alice@example.org\r\nTo: bob@example.net\r\nSubject: "+out+"\r\n\r\nqueued "+out+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sent := runCmd(t, dir, env, "", python, "-c", smtplibSubmit, "127.0.0.1", fmt.Sprint(smtpPort), "alice", pw,
		"alice@example.org", "bob@example.net", outMsg)
	if !strings.Contains(sent, "250 2.0.0 Queued as") {
		t.Fatalf("submission: %s", sent)
	}
	if _, err := os.Stat(db + ".outbox"); err != nil {
		t.Fatalf("no outbox: %v", err)
	}
	// The flag and the folder travel through the log and come back.
	time.Sleep(500 * time.Millisecond)

	check := func(when string) {
		t.Helper()
		entries, _ := os.ReadDir(devDir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		for _, root := range []string{devDir, tmp} {
			for tok, files := range grepTree(t, root, tokens) {
				t.Errorf("%s: token %s in plaintext in %v", when, tok, files)
			}
		}
		t.Logf("%s: device directory holds %v", when, names)
	}
	check("while the daemon runs")
	// The control: the tokens are where they should be, in the mail.
	for _, tc := range []struct {
		file string
		key  string
	}{{db, "mailstore"}, {db + ".outbox", "outbox"}} {
		if st, err := devicedb.Inspect(tc.file, nil); st != devicedb.Encrypted || err != nil {
			t.Errorf("%s: %v %v, want encrypted", tc.file, st, err)
		}
		k := devicedb.Key(alice.DatabaseKey(tc.key))
		if _, err := devicedb.Inspect(tc.file, &k); err != nil {
			t.Errorf("%s does not open with the key: %v", tc.file, err)
		}
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	check("after the daemon stopped")
	// The index, dropped and rebuilt by the command, is inside the
	// encrypted file too.
	rep := runCmd(t, dir, env, "", bin, "reindex", "--db", db, "--user-key", "alice.sec")
	if !strings.Contains(rep, "indexed 3 messages: the index holds") {
		t.Errorf("cspool reindex: %s", rep)
	}
	check("after cspool reindex")

	// The database holds the mail: read back through the daemon's key.
	ms := openTestStore(t, db, alice)
	n := 0
	boxes, err := ms.Mailboxes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range boxes {
		if b.Name == folder {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the folder %s is not in the encrypted database: %v", folder, boxes)
	}
	// The daemon indexed the mail for search, inside the encrypted file.
	if st, err := ms.IndexSize(t.Context()); err != nil || st.Unindexed != 0 || st.IndexBytes == 0 {
		t.Errorf("search index after the daemon ran: %+v, %v; want every body indexed", st, err)
	}
}

// openTestStore opens a device's database with the key the daemon uses.
func openTestStore(t *testing.T, db string, user *keys.SecretKey) *mailstore.Store {
	t.Helper()
	k := devicedb.Key(user.DatabaseKey("mailstore"))
	ms, err := mailstore.OpenWith(db, mailstore.Options{Parser: mimeform.Parser{}, Key: &k, NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	return ms
}

// TestMigrationKilled encrypts a plaintext device database of 10,000
// messages (as an earlier cspool left it) with cspool sync, kills the
// process with SIGKILL while the encrypted copy is being written, and runs
// it again: the migration completes and the state is the same, message
// for message.
func TestMigrationKilled(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary; 10,000 messages")
	}
	const count = 10000
	// The spool is seeded and the plaintext database synced by binaries
	// built without the race detector, as bench/atrest.sh makes them:
	// bench/seed, and cspool built with cspool_bench_plaintext, which keeps
	// the device's database in plaintext with the same driver and schema,
	// as an earlier cspool did. Both in this (race-instrumented) process
	// took minutes for 10,000 messages.
	bin := buildServerBinary(t)
	plainBin := buildBinary(t, "cspool-plain", ".", "cspool_bench_plaintext")
	seedBin := buildBinary(t, "seed", "../../bench/seed")
	dir := t.TempDir()
	env := append(os.Environ(), "CREDENTIALS_DIRECTORY=")
	alice, spoolK := mustKey(t), mustKey(t)
	for name, k := range map[string]*keys.SecretKey{"alice": alice, "spool": spoolK} {
		if err := keys.WriteFiles(k, filepath.Join(dir, name+".sec"), filepath.Join(dir, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	runCmd(t, dir, env, "", seedBin, "spool", "--spool-dir", "spool", "--user", "alice", "--user-key", "alice.pub",
		"--spool-key", "spool.sec", "--count", fmt.Sprint(count), "--size", fmt.Sprint(4<<10))
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port))
	waitHealthy(t, url, server)

	// The plaintext database.
	db := filepath.Join(dir, "alice.db")
	args := []string{"sync", "--once", "--user", "alice", "--user-key", "alice.sec", "--user-public-key", "alice.pub",
		"--spool-key", "spool.pub", "--db", db, "--spool-server", url}
	if out := runCmd(t, dir, env, "", plainBin, args...); !strings.Contains(out, fmt.Sprintf("synced to position %d", count)) {
		t.Fatalf("the plaintext sync did not reach position %d:\n%s", count, out)
	}
	if st, _ := devicedb.Inspect(db, nil); st != devicedb.Plaintext {
		t.Fatalf("the database to migrate is %v, want plaintext", st)
	}
	plain, err := mailstore.Open(db, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	before, err := plain.Dump(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Close(); err != nil {
		t.Fatal(err)
	}
	if len(before.Messages) != count {
		t.Fatalf("the plaintext database holds %d messages, want %d", len(before.Messages), count)
	}

	p := startProc(t, "cspool sync", dir, env, bin, args...)
	tmp := db + ".encrypting"
	deadline := time.Now().Add(120 * time.Second)
	for {
		if info, err := os.Stat(tmp); err == nil && info.Size() > 4<<20 {
			break
		}
		select {
		case err := <-p.done:
			p.exited = true
			t.Fatalf("cspool sync finished (%v) before it could be killed midway; output:\n%s", err, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no encrypted copy growing after 120 s; output:\n%s", p.stderr)
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.exited = true
	info, _ := os.Stat(tmp)
	t.Logf("killed with %d bytes of the encrypted copy written", info.Size())
	if st, _ := devicedb.Inspect(db, nil); st != devicedb.Plaintext {
		t.Fatalf("after the kill the database is %v, want still plaintext", st)
	}

	out := runCmd(t, dir, env, "", bin, args...)
	for _, want := range []string{"encrypting " + db + " in place", db + " is encrypted now", "synced to position"} {
		if !strings.Contains(out, want) {
			t.Errorf("the second run does not say %q:\n%s", want, out)
		}
	}
	if st, err := devicedb.Inspect(db, nil); st != devicedb.Encrypted || err != nil {
		t.Fatalf("after the second run: %v %v, want encrypted", st, err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("the encrypted copy is left behind: %v", err)
	}
	after, err := openTestStore(t, db, alice).Dump(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Messages) != count || after.Checksum() != before.Checksum() {
		t.Fatalf("after the migration %d messages, checksum %x; before %d, %x", len(after.Messages), after.Checksum(), len(before.Messages), before.Checksum())
	}
}

// openDeviceDB opens a device's database as its daemon does, with the key of
// the user's secret key file kept beside it (user.sec or alice.sec, as the
// tests lay them out); a plaintext database opens as it is.
func openDeviceDB(db string) (*mailstore.Store, error) {
	for _, name := range []string{"user.sec", "alice.sec"} {
		k, err := keys.LoadSecret(filepath.Join(filepath.Dir(db), name))
		if err != nil {
			continue
		}
		key := devicedb.Key(k.DatabaseKey("mailstore"))
		return mailstore.OpenWith(db, mailstore.Options{Parser: mimeform.Parser{}, Key: &key, NoMigrate: true})
	}
	return nil, fmt.Errorf("no user.sec or alice.sec beside %s", db)
}
