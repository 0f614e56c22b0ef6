package main

import (
	"bufio"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/devicedb"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// TestDaemonUpgradesOldForms: a device whose database holds the stored
// forms an earlier cspool made (the rows of internal/mailstore's
// testdata/forms-v0.db.gz, made by that cspool from the same messages,
// written over the daemon's own) serves them as they were until its
// daemon starts again, and the daemon then brings them up to date in the
// background: ENVELOPE gives the Date field's text over IMAP, as for a
// message applied now, with the same UIDs, flags and modseqs.
func TestDaemonUpgradesOldForms(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	d := startUpgradeDevice(t)
	addr, password := d.addr, d.password

	// The messages the old store was made of, appended in its order.
	files, err := filepath.Glob("../../internal/imapd/testdata/envdate/*.eml")
	if err != nil || len(files) != 20 {
		t.Fatalf("the envelope-date messages: %d files, %v; want the 20 of the old store", len(files), err)
	}
	sort.Strings(files)
	raws := make([][]byte, len(files))
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login("alice", password).Wait(); err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		if raws[i], err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
		ac := c.Append("INBOX", int64(len(raws[i])), nil)
		if _, err := ac.Write(raws[i]); err != nil {
			t.Fatal(err)
		}
		if err := ac.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := ac.Wait(); err != nil {
			t.Fatalf("APPEND %s: %v", f, err)
		}
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	flagged := imap.UIDSetNum(3, 15)
	if err := c.Store(flagged, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	d.stop(t)

	before := dumpDevice(t, d.db)
	if n := writeOldForms(t, d.db, d.alice); n != len(files) {
		t.Fatalf("wrote the old forms of %d bodies, want %d", n, len(files))
	}

	daemon := d.start(t)
	password = d.password
	want := make([]string, len(raws))
	for i, raw := range raws {
		_, ef, _, err := mimeform.ParseForms(raw)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = string(ef)
	}
	deadline := time.Now().Add(60 * time.Second)
	var got []string
	for {
		got = fetchEnvelopes(t, addr, password, len(raws))
		same := 0
		for i := range got {
			if want[i] == "" || got[i] == want[i] {
				same++
			}
		}
		if same == len(got) {
			break
		}
		if time.Now().After(deadline) {
			for i := range got {
				if want[i] != "" && got[i] != want[i] {
					t.Errorf("%s: ENVELOPE %.70q, want %.70q", filepath.Base(files[i]), got[i], want[i])
				}
			}
			t.Fatalf("60 s after the daemon started, %d of %d envelopes are not the current ones; its output:\n%s", len(got)-same, len(got), daemon.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(got[14], `("Mon, 2 Dec 2024 10:00:00 +0100" "normal"`) || !strings.HasPrefix(got[19], `("yesterday" "unparseable"`) {
		t.Errorf("the envelopes of normal.eml and unparseable.eml: %.50q, %.50q; want their Date fields' texts", got[14], got[19])
	}
	for !strings.Contains(daemon.stderr.String(), "stored forms up to date") {
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

// upgradeDevice is a spool server and alice's device daemon on a
// database of the test's, for the tests of the daemon's background
// upgrades of what an earlier cspool stored: stopped, the database is
// the test's to change, and started again, the daemon finds it so.
type upgradeDevice struct {
	bin, work, db, addr, password string
	env, args                     []string
	alice                         *keys.SecretKey
	daemon                        *proc
}

// startUpgradeDevice starts the server and the daemon, on a new
// database.
func startUpgradeDevice(t *testing.T) *upgradeDevice {
	t.Helper()
	d := &upgradeDevice{bin: buildServerBinary(t), work: t.TempDir(), env: os.Environ()}
	alice, spoolK := mustKey(t), mustKey(t)
	d.alice = alice
	for name, k := range map[string]*keys.SecretKey{"alice": alice, "spool": spoolK} {
		if err := keys.WriteFiles(k, filepath.Join(d.work, name+".sec"), filepath.Join(d.work, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeUsersFile(t, filepath.Join(d.work, "users"), map[string]*keys.SecretKey{"alice": alice})
	httpPort, imapPort := freePort(t), freePort(t)
	spoolURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	server := startProc(t, "cspool server", d.work, d.env, d.bin, "server", "--port", fmt.Sprint(httpPort),
		"--spool-dir", "spool", "--users", "users", "--spool-key", "spool.sec")
	waitHealthy(t, spoolURL, server)
	d.db = filepath.Join(d.work, "alice.db")
	d.args = []string{"imap-server", "--user", "alice",
		"--user-key", "alice.sec", "--user-public-key", "alice.pub", "--spool-key", "spool.pub",
		"--db", d.db, "--port", fmt.Sprint(imapPort), "--spool-server", spoolURL, "--status-addr", ""}
	d.addr = fmt.Sprintf("127.0.0.1:%d", imapPort)
	d.start(t)
	return d
}

// start starts the daemon and waits until it serves IMAP.
func (d *upgradeDevice) start(t *testing.T) *proc {
	t.Helper()
	d.daemon = startProc(t, "cspool imap-server", d.work, d.env, d.bin, d.args...)
	d.password = daemonPassword(t, d.daemon.waitOutput(t, "state:", 30*time.Second))
	return d.daemon
}

// stop stops the daemon.
func (d *upgradeDevice) stop(t *testing.T) {
	t.Helper()
	d.daemon.stop(t, syscall.SIGTERM, 30*time.Second)
}

// dumpDevice returns the replicated state of the device database at db
// (its daemon stopped).
func dumpDevice(t *testing.T, db string) *mailstore.State {
	t.Helper()
	ms, err := openDeviceDB(db)
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	st, err := ms.Dump(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// writeOldForms writes over the bodies of the device database at db the
// parse an earlier cspool stored for the same bytes (the rows of
// internal/mailstore/testdata/forms-v0.db.gz, found by digest), as of
// version 0, and returns how many bodies it wrote.
func writeOldForms(t *testing.T, db string, user *keys.SecretKey) int {
	t.Helper()
	old := openOldStore(t, "forms-v0.db.gz")
	key := devicedb.Key(user.DatabaseKey("mailstore"))
	dev, err := devicedb.Open(db, devicedb.Options{Key: &key, Params: "_pragma=busy_timeout(10000)"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	rows, err := old.Query(`SELECT b.digest, b.header_len, b.parsed, b.envelope, b.structure, f.envelope, s.structure
		FROM bodies b JOIN forms f ON f.bid = b.bid JOIN structures s ON s.bid = b.bid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	tx, err := dev.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	n := 0
	for rows.Next() {
		var digest, env, bs, envForm, bsForm []byte
		var hl, parsed int64
		if err := rows.Scan(&digest, &hl, &parsed, &env, &bs, &envForm, &bsForm); err != nil {
			t.Fatal(err)
		}
		var bid int64
		err := tx.QueryRow(`UPDATE bodies SET header_len = ?, parsed = ?, envelope = ?, structure = ?, forms_version = 0
			WHERE digest = ? RETURNING bid`, hl, parsed, env, bs, digest).Scan(&bid)
		if err == sql.ErrNoRows {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec("UPDATE forms SET envelope = ? WHERE bid = ?", envForm, bid); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec("UPDATE structures SET structure = ? WHERE bid = ?", bsForm, bid); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return n
}

// fetchEnvelopes logs in to the daemon at addr over a raw connection and
// returns the ENVELOPE of each of INBOX's n messages as the daemon wrote
// it ("" for one written with a literal).
func fetchEnvelopes(t *testing.T, addr, password string, n int) []string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	command := func(tag, line string) []string {
		if _, err := fmt.Fprintf(conn, "%s %s\r\n", tag, line); err != nil {
			t.Fatal(err)
		}
		var out []string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			l = strings.TrimRight(l, "\r\n")
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" OK") {
					t.Fatalf("%s: %s", line, l)
				}
				return out
			}
			out = append(out, l)
		}
	}
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	command("a", fmt.Sprintf("LOGIN alice %q", password))
	command("b", "SELECT INBOX")
	got := make([]string, n)
	for _, l := range command("c", "FETCH 1:* (ENVELOPE)") {
		var seq int
		if _, err := fmt.Sscanf(l, "* %d FETCH", &seq); err != nil || seq < 1 || seq > n {
			continue
		}
		if i := strings.Index(l, "ENVELOPE ("); i >= 0 && !strings.HasSuffix(l, "}") {
			got[seq-1] = strings.TrimSuffix(l[i+len("ENVELOPE "):], ")")
		}
	}
	return got
}
