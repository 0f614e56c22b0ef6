package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/keys"
)

// TestUsersFileMixUps starts a server on docs/OPERATING.md's users file
// ("Setup") as printed, its keys the users' own, then reloads it (SIGHUP)
// after each mistake an operator makes while adding carol: alice's and
// bob's keys swapped, bob's line given the spool's public key, carol
// given alice's key, carol's secret key pasted for her public one, the
// file made writable by everyone, the file emptied, the file given to
// another user than root and the server's (nobody, when the test runs as
// root: it was taken, and nobody could give any user a key of its own),
// the file saved with a byte-order mark. Each reload is refused: the log names the file (and
// the line, where one is to blame), never prints the secret key, and the
// previous table stays in force, so that alice and bob each reach their
// own log alone and carol none (the swap was taken, and each key reached
// the other's log; the emptied file was taken, and no user reached any).
// Carol's right line, in a file of CRLF line ends, is then taken. A
// server started on the file giving bob the spool's key exits naming the
// file, the line and, in its hint, bob; it named neither the line nor
// "users file", and its hint spoke of "that user"; one started on the
// file owned by nobody exits with the hint to chown it to root.
func TestUsersFileMixUps(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	alice, bob, carol, spoolK := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	spoolSec := filepath.Join(dir, "spool.sec")
	if err := keys.WriteFiles(spoolK, spoolSec, filepath.Join(dir, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/OPERATING.md")
	if err != nil {
		t.Fatal(err)
	}
	var example string
	for _, b := range codeBlocks(string(doc)) {
		if strings.HasPrefix(b, "# /etc/cspool/users\n") {
			example = b
		}
	}
	if strings.Count(example, "cspool-pub-1:...") != 2 || !strings.HasPrefix(example, "# /etc/cspool/users\nalice ") {
		t.Fatalf("docs/OPERATING.md: the users file is\n%s\nwant a block starting \"# /etc/cspool/users\", then alice's and bob's lines with cspool-pub-1:...", example)
	}
	example = strings.Replace(example, "cspool-pub-1:...", alice.Public().String(), 1)
	example = strings.Replace(example, "cspool-pub-1:...", bob.Public().String(), 1)
	users := filepath.Join(dir, "users")
	// write writes the file with mode, given to the user owner.
	write := func(text string, mode os.FileMode, owner int) {
		t.Helper()
		if err := os.WriteFile(users, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(users, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(users, owner, -1); err != nil {
			t.Fatal(err)
		}
	}
	write(example, 0o644, os.Geteuid())
	p := startServer(t, bin, "--users", users, "--spool-dir", filepath.Join(dir, "spool"), "--spool-key", spoolSec)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// reaches says whether key k reaches the log of user "of".
	reaches := func(of string, k *keys.SecretKey) error {
		c, err := api.NewClient(p.url, of, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Head(ctx)
		return err
	}
	check := func(when string) {
		t.Helper()
		for _, tc := range []struct {
			key string
			k   *keys.SecretKey
			of  string
			ok  bool
		}{
			{"alice", alice, "alice", true}, {"bob", bob, "bob", true},
			{"bob", bob, "alice", false}, {"alice", alice, "bob", false},
			{"carol", carol, "carol", false}, {"alice", alice, "carol", false}, {"spool", spoolK, "bob", false},
		} {
			if err := reaches(tc.of, tc.k); (err == nil) != tc.ok {
				t.Errorf("%s: %s's key on %s's log: %v, want reached %v", when, tc.key, tc.of, err, tc.ok)
			}
		}
	}
	check("at start")

	reload := func(want string) string {
		t.Helper()
		before := strings.Count(p.stderr.String(), want)
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			log := p.stderr.String()
			if strings.Count(log, want) > before {
				lines := strings.Split(log, "\n")
				for i := len(lines) - 1; i >= 0; i-- {
					if strings.Contains(lines[i], want) {
						return lines[i]
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log 10 s after SIGHUP:\n%s", want, log)
			}
		}
	}
	ap, bp, cp, sp := alice.Public().String(), bob.Public().String(), carol.Public().String(), spoolK.Public().String()
	for _, tc := range []struct {
		what, text string
		mode       os.FileMode
		says       []string
		owner      int
	}{
		{"alice's and bob's keys swapped", strings.NewReplacer(ap, bp, bp, ap).Replace(example), 0o644, []string{"line 2:", `user "alice" has the key user "bob" had`}, 0},
		{"bob given the spool's key", strings.Replace(example, bp, sp, 1), 0o644, []string{"line 3:", `"bob"`, "--spool-key"}, 0},
		{"carol given alice's key", example + "carol " + ap + "\n", 0o644, []string{"line 4:", `"carol"`, `"alice" (line 2)`}, 0},
		{"carol's secret key pasted", example + "carol " + carol.String() + "\n", 0o644, []string{"line 4:", `"carol"`, "SECRET key"}, 0},
		{"writable by everyone", example + "carol " + cp + "\n", 0o666, []string{"0666"}, 0},
		{"the file emptied", "", 0o644, []string{"lists no user"}, 0},
		{"owned by nobody", example + "carol " + cp + "\n", 0o644, []string{"owned by", "uid 65534", "not root, whom this command runs as"}, 65534},
		{"a byte-order mark", "\ufeff" + example + "carol " + cp + "\n", 0o644, []string{"byte-order mark"}, 0},
	} {
		if tc.owner != 0 && os.Geteuid() != 0 {
			continue // giving a file to another user needs root
		}
		if tc.owner == 0 {
			tc.owner = os.Geteuid()
		}
		write(tc.text, tc.mode, tc.owner)
		line := reload("users reload failed")
		for _, w := range append(tc.says, "users file "+users+":") {
			if !strings.Contains(line, strings.ReplaceAll(w, `"`, `\"`)) {
				t.Errorf("%s: the reload's log line does not say %s:\n%s", tc.what, w, line)
			}
		}
		check("after the reload of " + tc.what)
	}
	write(strings.ReplaceAll(example, "\n", "\r\n")+"carol "+cp+"\r\n", 0o644, os.Geteuid())
	reload("users reloaded")
	if err := reaches("carol", carol); err != nil {
		t.Errorf("carol after her line was added: %v", err)
	}
	if err := reaches("alice", carol); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("carol reading alice's log: %v, want ErrForbidden", err)
	}
	p.stop(t)
	if strings.Contains(p.stderr.String(), keys.SecretPrefix) {
		t.Errorf("the server's log holds a secret key:\n%s", p.stderr)
	}

	write(strings.Replace(example, bp, sp, 1), 0o644, os.Geteuid())
	code, stdout, stderr := runExitStdin(t, dir, nil, nil, bin, "server", "--users", users, "--spool-dir", filepath.Join(dir, "spool"),
		"--spool-key", spoolSec, "--port", "0")
	if code != 77 {
		t.Fatalf("cspool server on a users file giving bob the spool's key: exit %d, want 77\n%s%s", code, stdout, stderr)
	}
	saysAll(t, stderr, "cspool: error: users file "+users+": line 3: user \"bob\" has the public key of --spool-key "+spoolSec, "cspool: hint: either --spool-key "+spoolSec+" is bob's own secret key")

	if os.Geteuid() == 0 {
		write(example, 0o644, 65534)
		code, stdout, stderr = runExitStdin(t, dir, nil, nil, bin, "server", "--users", users, "--spool-dir", filepath.Join(dir, "spool"),
			"--spool-key", spoolSec, "--port", "0")
		if code != 77 {
			t.Fatalf("cspool server on a users file owned by nobody: exit %d, want 77\n%s%s", code, stdout, stderr)
		}
		saysAll(t, stderr, "users file "+users+": owned by ", "cspool: hint: run, as root: chown root "+users)
	}
}
