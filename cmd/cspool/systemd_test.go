package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/statuspage"
)

// recipeStep is one sh block of docs/systemd/README.md: who runs it (its
// first line, "# as root, ..." or "# as alice, ...") and the block itself.
type recipeStep struct {
	user, script string
}

// systemdRecipe returns the sh blocks of docs/systemd/README.md that say
// who runs them, in order.
func systemdRecipe(t *testing.T) []recipeStep {
	t.Helper()
	doc, err := os.ReadFile("../../docs/systemd/README.md")
	if err != nil {
		t.Fatal(err)
	}
	var steps []recipeStep
	for rest := string(doc); ; {
		_, after, ok := strings.Cut(rest, "\n```sh\n")
		if !ok {
			break
		}
		block, next, ok := strings.Cut(after, "\n```\n")
		if !ok {
			t.Fatal("docs/systemd/README.md: an sh block is not closed")
		}
		rest = next
		who, _, _ := strings.Cut(block, "\n")
		user, ok := strings.CutPrefix(who, "# as ")
		if !ok {
			continue // an example, not a step of the recipe
		}
		user, _, _ = strings.Cut(user, ",")
		if user != "root" && user != "alice" {
			t.Fatalf("docs/systemd/README.md: an sh block starts with %q, want \"# as root, ...\" or \"# as alice, ...\"", who)
		}
		steps = append(steps, recipeStep{user, block + "\n"})
	}
	return steps
}

// container is a systemd booted by systemd-nspawn on an overlay of this
// machine's root file system, with a private network.
type container struct {
	nspawn  *exec.Cmd
	console *lockedBuffer
	done    chan error
	pid     int // the container's PID 1, as this machine sees it
}

// bootContainer boots the machine's systemd (to basic.target) in a
// container whose root is / under a tmpfs overlay, after copying the tree
// prep over it. Everything happens in a mount namespace of its own: the
// overlay is gone when the container stops, and the machine's files are
// never written.
func bootContainer(t *testing.T, work, prep string) *container {
	t.Helper()
	const script = `set -e
W=$1
mkdir -p "$W/lower" "$W/upper" "$W/root"
mount --bind / "$W/lower"
mount -t tmpfs -o mode=0755 tmpfs "$W/upper"
mkdir "$W/upper/u" "$W/upper/w"
mount -t overlay overlay -o "lowerdir=$W/lower,upperdir=$W/upper/u,workdir=$W/upper/w" "$W/root"
R=$W/root
rm -rf "$R"/dev/* "$R"/run/*
: > "$R/etc/machine-id"
cp -a "$2/." "$R/"
chroot "$R" useradd --create-home --shell /bin/bash alice
echo "127.0.0.1 spool.example.org" >> "$R/etc/hosts"
cat "$3" >> "$R/etc/ssl/certs/ca-certificates.crt"
exec systemd-nspawn -D "$R" --boot --register=no --keep-unit --private-network -q -- --unit=basic.target
`
	c := &container{console: &lockedBuffer{}, done: make(chan error, 1)}
	c.nspawn = exec.Command("unshare", "--mount", "--propagation", "private", "bash", "-c", script, "bash",
		work, prep, filepath.Join(work, "ca.pem"))
	c.nspawn.Stdout, c.nspawn.Stderr = c.console, c.console
	if err := c.nspawn.Start(); err != nil {
		t.Fatalf("starting systemd-nspawn: %v", err)
	}
	go func() { c.done <- c.nspawn.Wait() }()
	t.Cleanup(func() { c.stop(t) })
	for deadline := time.Now().Add(60 * time.Second); c.pid == 0; time.Sleep(200 * time.Millisecond) {
		select {
		case err := <-c.done:
			c.done <- err
			t.Fatalf("systemd-nspawn exited (%v) before the container booted:\n%s", err, c.console)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no container init after 60 s:\n%s", c.console)
		}
		c.pid = childNamed(c.nspawn.Process.Pid, "systemd")
	}
	// systemctl answers once the manager listens; --wait then waits for
	// the end of the boot.
	state := ""
	for deadline := time.Now().Add(120 * time.Second); state != "running" && state != "degraded"; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the container's systemd is %q two minutes after booting:\n%s", state, c.console)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, _ := c.command(ctx, "root", "/", "systemctl is-system-running --wait").Output()
		cancel()
		state = strings.TrimSpace(string(out))
	}
	return c
}

// childNamed is the process id of a child of parent whose name is name, or 0.
func childNamed(parent int, name string) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		var comm string
		var ppid int
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Name:\t"); ok {
				comm = v
			}
			if v, ok := strings.CutPrefix(l, "PPid:\t"); ok {
				ppid, _ = strconv.Atoi(v)
			}
		}
		if comm == name && ppid == parent {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			return pid
		}
	}
	return 0
}

// command runs a bash script in the container as user (root, or alice with
// her user manager's environment), in dir, with bash -e -x.
func (c *container) command(ctx context.Context, user, dir, script string) *exec.Cmd {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	args := []string{"-t", strconv.Itoa(c.pid), "-m", "-u", "-i", "-n", "-p", "--"}
	if user == "root" {
		env = append(env, "HOME=/root", "USER=root", "LOGNAME=root")
		args = append(args, "env", "-i")
	} else {
		args = append(args, "runuser", "-u", user, "--", "sh", "-c",
			`u=$1; shift; uid=$(id -u); exec env -i HOME="$HOME" USER="$u" LOGNAME="$u" XDG_RUNTIME_DIR=/run/user/$uid DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/$uid/bus "$@"`,
			"sh", user)
	}
	args = append(append(args, env...), "bash", "-e", "-x", "-c", `cd "$1" && eval "$2"`, "bash", dir, script)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// run runs a script (bounded) and returns its standard output; a failure
// ends the test.
func (c *container) run(t *testing.T, user, dir, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := c.command(ctx, user, dir, script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		logs, _ := c.command(context.Background(), "root", "/", "journalctl --no-pager -n 80").CombinedOutput()
		t.Fatalf("as %s in %s:\n%s\nfailed: %v\nstdout:\n%s\nstderr:\n%s\njournal:\n%s", user, dir, script, err, &stdout, &stderr, logs)
	}
	return stdout.String()
}

// file reads a file of the container.
func (c *container) file(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", c.pid, path))
	if err != nil {
		t.Fatalf("reading %s in the container: %v", path, err)
	}
	return string(b)
}

// stop halts the container (SIGTERM to systemd-nspawn), killing it after
// 60 s.
func (c *container) stop(t *testing.T) {
	if c.nspawn.ProcessState != nil {
		return
	}
	c.nspawn.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(60 * time.Second):
		t.Errorf("the container did not stop within 60 s; killing systemd-nspawn")
		c.nspawn.Process.Kill()
		<-c.done
	}
	if t.Failed() {
		t.Logf("container console:\n%s", c.console)
	}
}

// TestSystemd runs docs/systemd/README.md as written: every sh block, as
// printed, as root or as alice, under a real systemd booted in a container
// (systemd-nspawn on a throwaway overlay of this machine's file system, with
// a private network). The server unit's dynamic user reads its config and
// its credentials, alice's user unit reads hers, cspool status and sync take
// the same --config, the generated IMAP password is in its file and in no
// journal, and a delivered message reaches alice's INBOX over IMAP.
func TestSystemd(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("boots systemd in a container")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("required in CI: booting systemd in a container needs root")
		}
		t.Skip("booting systemd in a container needs root; skipping")
	}
	needTool(t, "systemd-nspawn", "systemd-container")
	needTool(t, "unshare", "util-linux")
	needTool(t, "nsenter", "util-linux")
	needTool(t, "python3", "python3")
	steps := systemdRecipe(t)
	var who []string
	for _, s := range steps {
		who = append(who, s.user)
	}
	if strings.Join(who, " ") != "root alice root root alice" {
		t.Fatalf("docs/systemd/README.md's sh blocks run as %v, want root (server), alice (keys), root (users file), root (linger), alice (start)", who)
	}
	bin := buildServerBinary(t)
	work := t.TempDir()

	// What the operator brings: the binary, a checkout's docs/systemd, a
	// certificate for spool.example.org (trusted by the container, as a
	// public CA's would be).
	prep := filepath.Join(work, "prep")
	src := filepath.Join(prep, "usr/local/src/cspool")
	tlsDir := filepath.Join(prep, "etc/cspool/tls")
	for _, d := range []string{filepath.Join(prep, "usr/local/bin"), filepath.Join(src, "docs/systemd"), tlsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(tlsDir, 0o700)
	copyFile(t, bin, filepath.Join(prep, "usr/local/bin/cspool"), 0o755)
	for _, f := range []string{"cspool-server.service", "cspool-imap@.service"} {
		copyFile(t, filepath.Join("../../docs/systemd", f), filepath.Join(src, "docs/systemd", f), 0o644)
	}
	cert, key, _ := selfSigned(t, work, "spool.example.org")
	copyFile(t, cert, filepath.Join(tlsDir, "fullchain.pem"), 0o600)
	copyFile(t, key, filepath.Join(tlsDir, "privkey.pem"), 0o600)
	copyFile(t, cert, filepath.Join(work, "ca.pem"), 0o644)

	start := time.Now()
	c := bootContainer(t, work, prep)
	t.Logf("container booted in %v", time.Since(start).Round(time.Millisecond))
	const srcDir, aliceDir = "/usr/local/src/cspool", "/home/alice/cspool"

	// The server.
	c.run(t, "root", srcDir, steps[0].script)
	// Alice's device: a checkout, and spool.pub from the operator.
	c.run(t, "root", "/", `install -d -o alice -g alice /home/alice/cspool/docs
cp -r /usr/local/src/cspool/docs/systemd /home/alice/cspool/docs/
cp /etc/cspool/spool.pub /home/alice/cspool/
chown -R alice:alice /home/alice/cspool`)
	c.run(t, "alice", aliceDir, steps[1].script)
	// She sends alice.pub; the operator adds it and reloads.
	c.run(t, "root", "/", "cp /home/alice/.config/cspool/alice.pub /usr/local/src/cspool/")
	c.run(t, "root", srcDir, steps[2].script)
	c.run(t, "root", "/", steps[3].script)
	// Her user manager starts: wait for it, as a person would.
	c.run(t, "root", "/", `for i in $(seq 300); do
	systemctl is-active --quiet "user@$(id -u alice).service" && exit 0
	sleep 0.2
done
exit 1`)
	out := c.run(t, "alice", aliceDir, steps[4].script)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	password := lines[len(lines)-1]
	if !strings.Contains(out, "cspool daemon for alice") || len(password) < 16 {
		t.Fatalf("the last block printed:\n%s\nwant cspool status for alice, then the password", out)
	}

	// How it runs.
	checks := c.run(t, "root", "/", `systemctl is-active cspool-server
runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/$(id -u alice) systemctl --user is-active cspool-imap@alice
ps -o user= -p "$(systemctl show -p MainPID --value cspool-server)"
stat -c '%a %U' /etc/cspool /etc/cspool/server.conf /etc/cspool/users /var/lib/private/cspool /home/alice/.local/state/cspool/alice /home/alice/.local/state/cspool/alice/mail.db.password`)
	want := "active\nactive\ncspool\n755 root\n644 root\n644 root\n700 cspool\n700 alice\n600 alice\n"
	if checks != want {
		t.Errorf("units, users and modes:\n%s\nwant:\n%s", checks, want)
	}
	if j := c.run(t, "root", "/", "journalctl --no-pager -o cat"); !strings.Contains(j, "cspool imap-server started") ||
		!strings.Contains(j, "cspool server started") || strings.Contains(j, password) {
		t.Errorf("the journal: want both services' start lines and never the password (found: %v)", strings.Contains(j, password))
	}

	// Mail arrives: delivered over HTTPS with the server's config file,
	// read by alice over IMAP.
	c.run(t, "root", srcDir, `printf 'From: bob@example.org\r\nTo: alice@example.org\r\nSubject: through systemd\r\n\r\nHello.\r\n' > message.eml
cspool deliver --config /etc/cspool/server.conf --spool-server https://spool.example.org:3999 --spool-key /etc/cspool/spool.sec --user alice < message.eml`)
	for i := 0; ; i++ {
		var r statuspage.Report
		js := c.run(t, "alice", aliceDir, "cspool status --config ~/.config/cspool/alice.conf --json")
		if err := json.Unmarshal([]byte(js), &r); err != nil {
			t.Fatalf("cspool status --json: %v\n%s", err, js)
		}
		if inboxCount(&r) == 1 && r.Sync.State == statuspage.StateCurrent {
			break
		}
		if i == 100 {
			t.Fatalf("alice's INBOX never showed the message:\n%s", js)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.run(t, "alice", aliceDir, fmt.Sprintf("mkdir -p /home/alice/fetched && python3 -c %s 127.0.0.1 1143 alice %s 1 /home/alice/fetched 30 INBOX",
		shellQuote(imaplibFetch), shellQuote(password)))
	if got := c.file(t, "/home/alice/fetched/001.eml"); !strings.Contains(got, "Subject: through systemd\r\n") {
		t.Errorf("IMAP gave alice %q, want the delivered message", got)
	}

	// With the daemon stopped, cspool sync reads the same file.
	if out := c.run(t, "alice", aliceDir, "systemctl --user stop cspool-imap@alice && cspool sync --config ~/.config/cspool/alice.conf"); !strings.Contains(out, "synced to position 1 (head 1)") {
		t.Errorf("cspool sync --config printed:\n%s\nwant synced to position 1", out)
	}

	// docs/OPERATING.md's SQLite backup and restore, as printed, on this
	// install: the restore's block stops and starts the unit for real, in
	// its state directory behind /var/lib/cspool; the server then takes
	// mail. The backup is given the name the restore's block reads.
	c.run(t, "root", "/", backupSteps(t)[0])
	c.run(t, "root", "/", `cp "/backup/cspool/spool-$(date +%F).db" /backup/cspool/spool-2026-03-01.db`)
	c.run(t, "root", "/", restoreSteps(t)[0])
	if got := c.run(t, "root", srcDir, `systemctl is-active cspool-server
stat -c '%U %a' /var/lib/private/cspool/spool.db /backup/cspool
cspool deliver --config /etc/cspool/server.conf --spool-server https://spool.example.org:3999 --spool-key /etc/cspool/spool.sec --user alice < message.eml`); !strings.HasPrefix(got, "active\ncspool 600\nroot 700\n") {
		t.Errorf("after the restore: the unit, spool.db's owner and mode, the backups' folder's:\n%s\nwant active, cspool 600, root 700", got)
	}

	// docs/OPERATING.md, "Replacing the spool key", on this install: step
	// 1's gen-keys and the block for the unit, as printed, then a
	// delivery signed by the new key.
	genKeys, _ := spoolKeyRecipe(t)
	c.run(t, "root", "/etc/cspool", genKeys)
	c.run(t, "root", "/", recipe(t, "### Replacing the spool key")[0])
	if j := c.run(t, "root", "/", "journalctl --no-pager -o cat -u cspool-server"); !strings.Contains(j, "the spool key was replaced") {
		t.Errorf("the journal after the spool key's replacement under the unit: no \"the spool key was replaced\":\n%s", j)
	}
	c.run(t, "root", srcDir, `systemctl is-active cspool-server
cspool deliver --config /etc/cspool/server.conf --spool-server https://spool.example.org:3999 --spool-key /etc/cspool/spool.sec --user alice < message.eml`)

	// A mistake to fix is not started again and again: with the users
	// file gone the server exits 77 and the unit fails at once, never
	// restarted (RestartPreventExitStatus=, docs/OPERATING.md, "Exit
	// status"); it exited 1 and Restart=on-failure started it again until
	// systemd's start limit. Back in place, the unit starts.
	got := c.run(t, "root", "/", `mv /etc/cspool/users /etc/cspool/users.away
systemctl restart cspool-server || true
for i in $(seq 300); do
	[ "$(systemctl show -p ActiveState --value cspool-server)" = failed ] && break
	sleep 0.1
done
systemctl show -p ActiveState --value cspool-server
systemctl show -p ExecMainStatus --value cspool-server
systemctl show -p NRestarts --value cspool-server
mv /etc/cspool/users.away /etc/cspool/users
systemctl reset-failed cspool-server
systemctl start cspool-server
systemctl is-active cspool-server`)
	if got != "failed\n77\n0\nactive\n" {
		t.Errorf("the unit on a missing users file: state, exit status, restarts, then active again once it is back:\n%s\nwant failed, 77, 0 restarts, active", got)
	}
	t.Logf("recipe run and checked in %v", time.Since(start).Round(time.Millisecond))
}

// copyFile copies a file with the given mode.
func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(to, mode); err != nil {
		t.Fatal(err)
	}
}

// TestSystemdDropIns holds docs/systemd/README.md's two drop-ins for
// cspool-imap@.service, which TestSystemd does not run, to what they
// stand on: the outbox release's ExecStart is the unit's own with the
// flag the README's status line names added, after the empty ExecStart=
// that clears the unit's; the credential's name is the one every command
// reads, and its file the one the README's systemd-creds command writes
// (%E being ~/.config in a user manager). Running them needs a user
// manager in the container, and the credential systemd 256 (`--user`).
func TestSystemdDropIns(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/systemd/README.md")
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("../../docs/systemd/cspool-imap@.service")
	if err != nil {
		t.Fatal(err)
	}
	var execStart string
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			execStart = v
		}
	}
	var release, cred []string
	for _, b := range codeBlocks(string(doc)) {
		lines := strings.Split(strings.TrimSpace(b), "\n")
		switch {
		case len(lines) > 1 && lines[0] == "[Service]" && lines[1] == "ExecStart=":
			release = lines
		case len(lines) > 1 && lines[0] == "[Service]" && strings.HasPrefix(lines[1], "LoadCredentialEncrypted="):
			cred = lines
		}
	}
	name := regexp.MustCompile(`restart once with --release-outbox=([0-9a-f]+)`).FindStringSubmatch(string(doc))
	if len(release) != 3 || name == nil || release[2] != "ExecStart="+execStart+" --release-outbox="+name[1] {
		t.Errorf("docs/systemd/README.md's outbox release drop-in %q: want [Service], ExecStart= and the unit's ExecStart=%s with --release-outbox= the name its status line gives (%v)", release, execStart, name)
	}
	if len(cred) != 2 {
		t.Fatalf("docs/systemd/README.md: no drop-in of [Service] and LoadCredentialEncrypted= alone: %q", cred)
	}
	credName, file, _ := strings.Cut(strings.TrimPrefix(cred[1], "LoadCredentialEncrypted="), ":")
	if credName != credentialName {
		t.Errorf("docs/systemd/README.md's drop-in loads the credential %q; cspool reads %q", credName, credentialName)
	}
	if written := "~/.config/" + strings.TrimPrefix(file, "%E/"); !strings.Contains(string(doc), "--name="+credentialName+" - "+written+"\n") {
		t.Errorf("docs/systemd/README.md's drop-in loads %s; its systemd-creds command does not write %s as %s", file, written, credentialName)
	}
}
