package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"cspool/internal/keys"
	"cspool/internal/spool/pgstore/pgtest"
)

// TestStartExitStatuses starts cspool server, imap-server and sync, the
// binary, on each kind of mistake and on a port another program holds,
// and requires the status docs/OPERATING.md's "Exit status" gives it: 77
// for a key, users or config file that cannot be used, 78 for a setting
// that names the wrong key or database, 75 for a port or a database in use
// (temporary), 2 for a config file's line. Every one of them but the last
// exited 1, so a service manager could not tell a mistake to fix from a
// failure that passes, and restarted a server with a missing key for good.
func TestStartExitStatuses(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	spoolDir := filepath.Join(dir, "spool")
	srv := startServer(t, bin, "--users", usersPath, "--spool-dir", spoolDir, "--spool-key", filepath.Join(dir, "spool.sec"))
	// A delivery, so that the store records the spool key it is signed
	// with, and a first sync, so that mail.db is alice's.
	if code, out, errOut := runExitStdin(t, dir, nil, []byte("Subject: x\r\n\r\nx\r\n"), bin, "deliver", "--spool-server", srv.url,
		"--users", usersPath, "--user", "alice", "--spool-key", "spool.sec"); code != 0 {
		t.Fatalf("deliver: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	device := func(cmd, db string, over ...string) []string {
		flags := map[string]string{"--user-key": "user.sec", "--user-public-key": "user.pub", "--spool-key": "spool.pub", "--db": db}
		for i := 0; i+1 < len(over); i += 2 {
			flags[over[i]] = over[i+1]
		}
		args := []string{cmd, "--user", "alice", "--spool-server", srv.url}
		if cmd == "sync" {
			args = append(args, "--once")
		} else {
			args = append(args, "--status-addr", "", "--smtp-addr", "")
		}
		for _, f := range []string{"--user-key", "--user-public-key", "--spool-key", "--db"} {
			args = append(args, f, flags[f])
		}
		return args
	}
	if code, out, errOut := runExit(t, dir, nil, bin, device("sync", "mail.db")...); code != 0 {
		t.Fatalf("first sync: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// Files of the wrong kinds and a stranger's key pair.
	bob := mustKey(t)
	if err := keys.WriteFiles(bob, filepath.Join(dir, "bob.sec"), filepath.Join(dir, "bob.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	other := mustKey(t)
	if err := keys.WriteFiles(other, filepath.Join(dir, "other.sec"), filepath.Join(dir, "other.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badUsers := write("bad-users", "alice not-a-key\n")
	badConf := write("bad.conf", "no-such-setting = 1\n")
	openDir := filepath.Join(dir, "open")
	if err := os.Mkdir(openDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	// A port another program holds.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldPort := fmt.Sprint(held.Addr().(*net.TCPAddr).Port)
	server := func(over ...string) []string {
		flags := map[string]string{"--port": fmt.Sprint(freePort(t)), "--users": usersPath, "--spool-dir": spoolDir, "--spool-key": "spool.sec", "--lmtp": ""}
		for i := 0; i+1 < len(over); i += 2 {
			flags[over[i]] = over[i+1]
		}
		args := []string{"server"}
		for _, f := range []string{"--port", "--users", "--spool-dir", "--spool-key", "--lmtp"} {
			args = append(args, f, flags[f])
		}
		return args
	}
	for _, c := range []struct {
		what string
		args []string
		code int
	}{
		{"server: --spool-key missing", server("--spool-key", "missing.sec"), 77},
		{"server: --spool-key a public key", server("--spool-key", "spool.pub"), 77},
		{"server: --spool-key not a key file", server("--spool-key", "users"), 77},
		{"server: --users missing", server("--users", "missing-users"), 77},
		{"server: --users with a bad line", server("--users", badUsers), 77},
		{"server: --config with an unknown setting", append(server(), "--config", badConf), 2},
		{"server: --config missing", append(server(), "--config", "missing.conf"), 77},
		{"server: --spool-key not the store's", server("--spool-key", "other.sec"), 78},
		{"server: --port in use", server("--port", heldPort, "--spool-dir", filepath.Join(dir, "spool2")), 75},
		{"imap-server: --user-key missing", device("imap-server", "mail.db", "--user-key", "missing.sec"), 77},
		{"imap-server: --user-key a public key", device("imap-server", "mail.db", "--user-key", "user.pub"), 77},
		{"imap-server: --user-public-key another's", device("imap-server", "mail.db", "--user-public-key", "bob.pub"), 77},
		{"imap-server: --spool-key the user's", device("imap-server", "mail.db", "--spool-key", "user.pub"), 77},
		{"imap-server: --db another user's", device("imap-server", "mail.db", "--user-key", "bob.sec", "--user-public-key", "bob.pub"), 78},
		{"imap-server: --db the spool's", device("imap-server", filepath.Join(spoolDir, "spool.db")), 78},
		{"imap-server: --port in use", append(device("imap-server", "mail.db"), "--port", heldPort), 75},
		{"sync: --spool-key missing", device("sync", "mail.db", "--spool-key", "missing.pub"), 77},
		{"sync: --spool-key a secret key", device("sync", "mail.db", "--spool-key", "spool.sec"), 77},
		{"sync: --db another user's", device("sync", "mail.db", "--user-key", "bob.sec", "--user-public-key", "bob.pub"), 78},
		{"sync: --db in a folder that does not exist", device("sync", filepath.Join(dir, "missing", "mail.db")), 78},
		{"sync: --db in a folder others may write", device("sync", filepath.Join(openDir, "mail.db")), 77},
	} {
		code, out, errOut := runExit(t, dir, nil, bin, c.args...)
		if code != c.code || !strings.Contains(errOut, "cspool") {
			t.Errorf("%s: exit %d, want %d (docs/OPERATING.md, \"Exit status\"); stdout %q, stderr %q", c.what, code, c.code, out, errOut)
		}
	}
	// Nothing above took mail.db from alice.
	if code, out, errOut := runExit(t, dir, nil, bin, device("sync", "mail.db")...); code != 0 || !strings.Contains(out, "synced to position 1") {
		t.Fatalf("sync after the refusals: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestPostgresStartExitStatuses starts cspool server, the binary, on a
// --dsn that PostgreSQL refuses (a role or a database it does not have)
// or that cannot be parsed, each 78 (EX_CONFIG: a start again fails
// again, and the unit does not restart it), and on a port where no
// PostgreSQL answers, 75 (temporary: it may be starting). The three
// refusals exited 1, and the unit restarted the server on them until the
// start limit.
func TestPostgresStartExitStatuses(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dsn := pgtest.Database(t)
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	noRole := *u
	noRole.User = url.User("cspool_no_such_role")
	down := *u
	down.Host = net.JoinHostPort("127.0.0.1", fmt.Sprint(freePort(t)))
	for _, c := range []struct {
		what, dsn string
		code      int
	}{
		{"a role PostgreSQL does not have", noRole.String(), 78},
		{"a database PostgreSQL does not have", pgtest.WithParam(dsn, "dbname", pgtest.Name("cspool_missing_")), 78},
		{"a DSN that cannot be parsed", pgtest.WithParam(dsn, "sslmode", "bogus"), 78},
		{"no PostgreSQL on its port", down.String(), 75},
	} {
		code, out, errOut := runExit(t, dir, nil, bin, "server", "--port", fmt.Sprint(freePort(t)), "--lmtp", "", "--users", usersPath,
			"--store", "postgres", "--dsn", c.dsn, "--spool-key", "spool.sec")
		if code != c.code || !strings.Contains(errOut, "PostgreSQL") {
			t.Errorf("server on %s: exit %d, want %d (docs/OPERATING.md, \"Exit status\"); stdout %q, stderr %q", c.what, code, c.code, out, errOut)
		}
	}
}

// TestUnitsStopOnMistakes holds both systemd units of docs/systemd to
// docs/OPERATING.md's "Exit status": RestartPreventExitStatus= lists the
// statuses the table says a start again would only repeat, but 2 (also
// the status of a Go panic, which a restart should follow), and none
// that may pass. Without it, Restart=on-failure started a server with a
// missing key again and again.
func TestUnitsStopOnMistakes(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/OPERATING.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n### Exit status\n")
	if !ok {
		t.Fatal(`docs/OPERATING.md: no "### Exit status" section`)
	}
	section, _, _ = strings.Cut(section, "\n### ")
	var fix []string
	for _, m := range regexp.MustCompile(`(?m)^\| (\d+) \|.*\| (no|yes)\b[^|]*\|$`).FindAllStringSubmatch(section, -1) {
		if m[2] == "no" && m[1] != "2" {
			fix = append(fix, m[1])
		}
	}
	if !slices.Equal(fix, []string{strconv.Itoa(exNoPerm), strconv.Itoa(exConfig)}) {
		t.Fatalf("docs/OPERATING.md's exit statuses not to start again on (but 2): %v, want %d and %d", fix, exNoPerm, exConfig)
	}
	for _, unit := range []string{"cspool-server.service", "cspool-imap@.service"} {
		b, err := os.ReadFile(filepath.Join("../../docs/systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		var prevent []string
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "RestartPreventExitStatus="); ok {
				prevent = append(prevent, strings.Fields(v)...)
			}
		}
		if !slices.Equal(prevent, fix) || !strings.Contains(string(b), "\nRestart=on-failure\n") {
			t.Errorf("docs/systemd/%s: RestartPreventExitStatus= %v beside Restart=on-failure, want %v (docs/OPERATING.md, \"Exit status\")", unit, prevent, fix)
		}
	}
}
