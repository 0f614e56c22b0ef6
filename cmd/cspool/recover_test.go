package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/statuspage"
)

// imaplibOps is run by Python: it logs in and performs the operations in
// its JSON argument, each on the one message of a mailbox whose Subject
// is given: ["flag", box, subject, flag], ["expunge", box, subject],
// ["move", box, subject, to], or ["create", name]; or appends a draft of
// that subject: ["append", box, subject].
const imaplibOps = `
import imaplib, json, sys
host, port, user, password, ops = sys.argv[1:6]
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
def ok(what, r):
    if r[0] != "OK":
        sys.exit("%s: %r" % (what, r))
    return r[1]
for op in json.loads(ops):
    if op[0] == "create":
        ok("create", M.create(op[1]))
        continue
    if op[0] == "append":
        msg = "From: alice@example.org\r\nSubject: %s\r\n\r\nA draft.\r\n" % op[2]
        ok("append", M.append(op[1], "(\\Draft)", None, msg.encode()))
        continue
    ok("select", M.select(op[1]))
    uids = ok("search", M.uid("SEARCH", "HEADER", "Subject", '"%s"' % op[2]))[0].split()
    if len(uids) != 1:
        sys.exit("search %s in %s: %r" % (op[2], op[1], uids))
    uid = uids[0].decode()
    if op[0] == "flag":
        ok("store", M.uid("STORE", uid, "+FLAGS", "(%s)" % op[3]))
    elif op[0] == "expunge":
        ok("store", M.uid("STORE", uid, "+FLAGS", "(\\Deleted)"))
        ok("expunge", M.expunge())
    elif op[0] == "move":
        ok("move", M.uid("MOVE", uid, op[3]))
M.logout()
print("DONE")
`

// imaplibList is run by Python: it prints, as JSON, every mailbox with its
// UIDVALIDITY and each message's UID, Subject and flags, as a mail client
// sees them.
const imaplibList = `
import imaplib, json, re, sys
host, port, user, password = sys.argv[1:5]
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
out = {}
for line in M.list()[1]:
    name = line.decode().rsplit(' "/" ', 1)[1].strip('"')
    typ, data = M.select('"%s"' % name, readonly=True)
    if typ != "OK":
        continue
    uv = int(M.response("UIDVALIDITY")[1][0])
    msgs = []
    if int(data[0]) > 0:
        typ, data = M.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        for item in data:
            if isinstance(item, tuple):
                head = item[0].decode()
                uid = int(re.search(r"UID (\d+)", head).group(1))
                flags = sorted(f for f in re.search(r"FLAGS \(([^)]*)\)", head).group(1).split() if f != "\\Recent")
                subject = item[1].decode().split(":", 1)[1].strip()
                msgs.append([uid, subject, flags])
    out[name] = {"uidvalidity": uv, "messages": msgs}
M.logout()
print(json.dumps(out))
`

// restoreSetup is a spool server restored from a backup as
// docs/OPERATING.md says, and the user's devices, each a daemon started as
// the documented systemd user unit starts it (its own HOME, keys and
// alice.conf in ~/.config/cspool, the database in
// ~/.local/state/cspool/alice; docs/systemd/README.md).
type restoreSetup struct {
	bin, dir, python  string
	env               []string
	spoolDir, backups string
	port              int
	url               string
	server            *proc
	serverArgs        []string // the store's flags; nil: SQLite in spoolDir
	userKey           *keys.SecretKey
	sent              int
	subjects          map[[32]byte]string // by SHA-256 of the delivered message
}

type deviceDaemon struct {
	name, home, db string
	imapPort       int
	password       string
	daemon         *proc
	extra          []string // more flags for its daemon
}

func newRestoreSetup(t *testing.T, bin, python string, serverArgs ...string) *restoreSetup {
	t.Helper()
	s := &restoreSetup{bin: bin, dir: t.TempDir(), python: python, subjects: map[[32]byte]string{}, serverArgs: serverArgs}
	s.env = append(os.Environ(), "USER=alice", "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	runCmd(t, s.dir, s.env, "", bin, "gen-keys", "user.sec", "user.pub")
	runCmd(t, s.dir, s.env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	var err error
	if s.userKey, err = keys.LoadSecret(filepath.Join(s.dir, "user.sec")); err != nil {
		t.Fatal(err)
	}
	// The backups' folder is the backup recipe's to make.
	s.spoolDir, s.backups = filepath.Join(s.dir, "spool"), filepath.Join(s.dir, "backup")
	s.port = freePort(t)
	s.url = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	s.startServer(t)
	return s
}

func (s *restoreSetup) startServer(t *testing.T) {
	t.Helper()
	store := s.serverArgs
	if store == nil {
		store = []string{"--spool-dir", s.spoolDir}
	}
	s.server = startProc(t, "cspool server", s.dir, s.env, s.bin, append([]string{"server", "--port", fmt.Sprint(s.port),
		"--spool-key", "spool.sec"}, store...)...)
	waitHealthy(t, s.url, s.server)
}

// deliver delivers n messages with cspool deliver and returns their
// subjects.
func (s *restoreSetup) deliver(t *testing.T, n int) []string {
	t.Helper()
	var subjects []string
	for range n {
		subject := fmt.Sprintf("restore test %d", s.sent)
		msg := fmt.Sprintf("From: bob@example.org\r\nTo: alice@example.org\r\nSubject: %s\r\n\r\nBody %d.\r\n", subject, s.sent)
		s.sent++
		name := filepath.Join(s.dir, "msg")
		if err := os.WriteFile(name, []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		runCmd(t, s.dir, s.env, "msg", s.bin, "deliver", "--user", "alice", "--user-key=user.pub", "--spool-key=spool.sec",
			"--spool-server", s.url)
		s.subjects[sha256.Sum256([]byte(msg))] = subject
		subjects = append(subjects, subject)
	}
	return subjects
}

// newDevice makes a device's HOME with the user's keys and config file
// where docs/systemd/README.md puts them (the spool server's URL being this
// test's).
func (s *restoreSetup) newDevice(t *testing.T, name string) *deviceDaemon {
	t.Helper()
	d := &deviceDaemon{name: name, home: filepath.Join(s.dir, name)}
	conf := filepath.Join(d.home, ".config", "cspool")
	state := filepath.Join(d.home, ".local", "state", "cspool", "alice")
	for _, dir := range []string{conf, state} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for from, to := range map[string]string{"user.sec": "alice.sec", "user.pub": "alice.pub", "spool.pub": "spool.pub"} {
		b, err := os.ReadFile(filepath.Join(s.dir, from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(conf, to), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d.db = filepath.Join(state, "mail.db")
	cfg := fmt.Sprintf("user = alice\nuser-key = %s\nuser-public-key = %s\nspool-key = %s\nspool-server = %s\ndb = %s\n",
		filepath.Join(conf, "alice.sec"), filepath.Join(conf, "alice.pub"), filepath.Join(conf, "spool.pub"), s.url, d.db)
	if err := os.WriteFile(filepath.Join(conf, "alice.conf"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

func (s *restoreSetup) deviceEnv(d *deviceDaemon) []string {
	return append(slices.Clone(s.env), "HOME="+d.home)
}

// start runs the daemon as the documented user unit's ExecStart does, with
// d's extra flags.
func (s *restoreSetup) start(t *testing.T, d *deviceDaemon) {
	t.Helper()
	conf := filepath.Join(d.home, ".config", "cspool")
	d.imapPort = freePort(t)
	d.daemon = startProc(t, "cspool imap-server ("+d.name+")", d.home, s.deviceEnv(d), s.bin, append([]string{"imap-server",
		"--config", filepath.Join(conf, "alice.conf"),
		"--port", fmt.Sprint(d.imapPort), "--status-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t))}, d.extra...)...)
	out := d.daemon.waitOutput(t, "state:", 30*time.Second)
	d.password = daemonPassword(t, out)
}

func (d *deviceDaemon) stop(t *testing.T) {
	t.Helper()
	d.daemon.stop(t, syscall.SIGTERM, 20*time.Second)
}

// report waits (at most 60 s) until the daemon's report satisfies ok.
func (d *deviceDaemon) report(t *testing.T, what string, ok func(*statuspage.Report) bool) *statuspage.Report {
	t.Helper()
	var last *statuspage.Report
	var err error
	for range 600 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last, err = statuspage.FetchSocket(ctx, controlSocketPath(d.db))
		cancel()
		if err == nil && ok(last) {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s's status never showed %s; last %+v, err %v", d.name, what, last, err)
	return nil
}

// head is the spool's head.
func (s *restoreSetup) head(t *testing.T) uint64 {
	t.Helper()
	c, err := api.NewClient(s.url, "alice", s.userKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// synced waits until the daemon has applied the spool's whole log without
// an alarm.
func (s *restoreSetup) synced(t *testing.T, d *deviceDaemon) {
	t.Helper()
	head := s.head(t)
	d.report(t, fmt.Sprintf("position %d without an alarm", head), func(r *statuspage.Report) bool {
		return r.Sync.Position == head && len(r.Alarms) == 0
	})
}

// imap performs ops through the device's IMAP server.
func (s *restoreSetup) imap(t *testing.T, d *deviceDaemon, ops ...[]string) {
	t.Helper()
	b, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.python, "-c", imaplibOps, "127.0.0.1", fmt.Sprint(d.imapPort), "alice", d.password, string(b)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "DONE") {
		t.Fatalf("imaplib on %s, %s: %v\n%s", d.name, b, err, out)
	}
}

type clientView map[string]struct {
	UIDValidity uint32  `json:"uidvalidity"`
	Messages    [][]any `json:"messages"`
}

// list is what a mail client sees on the device.
func (s *restoreSetup) list(t *testing.T, d *deviceDaemon) clientView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.python, "-c", imaplibList, "127.0.0.1", fmt.Sprint(d.imapPort), "alice", d.password).Output()
	if err != nil {
		t.Fatalf("imaplib list on %s: %v\n%s", d.name, err, out)
	}
	var v clientView
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("imaplib list on %s: %v\n%s", d.name, err, out)
	}
	return v
}

// noUIDReused fails if a mailbox a client saw keeps its UIDVALIDITY while
// a UID it saw names another message.
func noUIDReused(t *testing.T, device string, before, after clientView) {
	t.Helper()
	for box, b := range before {
		a, ok := after[box]
		if !ok || a.UIDValidity != b.UIDValidity {
			continue
		}
		now := map[float64]any{}
		for _, m := range a.Messages {
			now[m[0].(float64)] = m[1]
		}
		for _, m := range b.Messages {
			if subj, ok := now[m[0].(float64)]; ok && subj != m[1] {
				t.Errorf("%s: %s (UIDVALIDITY %d) UID %v was %q and is now %q", device, box, b.UIDValidity, m[0], m[1], subj)
			}
		}
	}
}

// checkPlaced checks that st holds exactly the messages of expect, by the
// subject each was delivered with, in the mailboxes and with the flags
// given ("mailbox flags"), expunged (expunged when) among none of them,
// and the Projects mailbox, created after the backup.
func (s *restoreSetup) checkPlaced(t *testing.T, st *mailstore.State, expect map[string]string, expunged, when string) {
	t.Helper()
	got := s.placed(t, st)
	for subject, w := range expect {
		if got[subject] != w {
			t.Errorf("%s: %q, want %q", subject, got[subject], w)
		}
	}
	if _, ok := got[expunged]; ok || len(got) != len(expect) {
		t.Errorf("messages %v, want exactly %v (%s expunged %s)", got, expect, expunged, when)
	}
	if !slices.ContainsFunc(st.Mailboxes, func(mb mailstore.MailboxState) bool { return mb.Name == "Projects" }) {
		t.Error("Projects, created after the backup, is gone")
	}
}

// placed gives where each message of st is, by the subject it was
// delivered with: "mailbox flags"; a message nobody delivered is an error.
func (s *restoreSetup) placed(t *testing.T, st *mailstore.State) map[string]string {
	t.Helper()
	got := map[string]string{}
	boxes := map[[16]byte]string{}
	for _, mb := range st.Mailboxes {
		boxes[mb.ID] = mb.Name
	}
	for _, msg := range st.Messages {
		subject, ok := s.subjects[msg.Digest]
		if !ok {
			t.Errorf("a message nobody delivered, in %s", boxes[msg.Mailbox])
			continue
		}
		got[subject] = strings.TrimSpace(boxes[msg.Mailbox] + " " + strings.Join(msg.Flags, " "))
	}
	return got
}

// operatingSection returns the text of docs/OPERATING.md's section
// heading (its "### " line), up to the next such heading.
func operatingSection(t *testing.T, heading string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "OPERATING.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	i := strings.Index(text, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("docs/OPERATING.md has no %q", heading)
	}
	text = text[i+len(heading)+2:]
	if j := strings.Index(text, "\n### "); j >= 0 {
		text = text[:j]
	}
	return text
}

// inlineCode returns what text holds between backquotes, in order, each
// with its line breaks and runs of blanks undone (a command the doc
// wraps over lines, as a reader types it).
func inlineCode(text string) []string {
	var code []string
	parts := strings.Split(text, "`")
	for k := 1; k < len(parts); k += 2 {
		code = append(code, strings.Join(strings.Fields(parts[k]), " "))
	}
	return code
}

// recipe returns the shell blocks of docs/OPERATING.md's section heading,
// in order, each without its indentation.
func recipe(t *testing.T, heading string) []string {
	t.Helper()
	text := operatingSection(t, heading)
	var blocks []string
	lines := strings.Split(text, "\n")
	for k := 0; k < len(lines); k++ {
		l := strings.TrimSpace(lines[k])
		if l != "```sh" {
			continue
		}
		indent := lines[k][:strings.Index(lines[k], "```")]
		var b []string
		for k++; k < len(lines) && strings.TrimSpace(lines[k]) != "```"; k++ {
			b = append(b, strings.TrimPrefix(lines[k], indent))
		}
		blocks = append(blocks, strings.Join(b, "\n"))
	}
	return blocks
}

// runRecipe runs a documented block with sh, in dir with env, after the
// replacements given; each "systemctl" line instead calls do with it.
func runRecipe(t *testing.T, block, dir string, env []string, replace []string, do func(string)) string {
	t.Helper()
	block = strings.NewReplacer(replace...).Replace(block)
	var out bytes.Buffer
	var script []string
	flush := func() {
		if len(script) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-e", "-c", strings.Join(script, "\n"))
		cmd.Dir, cmd.Env = dir, env
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("running the documented\n%s\n: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(script, "\n"), err, out.String(), stderr.String())
		}
		script = nil
	}
	for _, l := range strings.Split(block, "\n") {
		if strings.HasPrefix(l, "systemctl ") {
			flush()
			do(l)
			continue
		}
		script = append(script, l)
	}
	flush()
	return out.String()
}

// spoolPaths are the paths of docs/OPERATING.md's backup and restore
// recipes, and this setup's for them, in runRecipe's pairs.
func (s *restoreSetup) spoolPaths() []string {
	return []string{"/var/lib/cspool", s.spoolDir, "/backup/cspool", s.backups}
}

// backupSpool runs docs/OPERATING.md's "Backups" recipe as written and
// returns the backup file it made.
func (s *restoreSetup) backupSpool(t *testing.T) string {
	t.Helper()
	backup := backupSteps(t)[0]
	runRecipe(t, backup, s.dir, s.env, s.spoolPaths(), func(l string) { t.Fatalf("unexpected %q in the backup recipe", l) })
	names, err := filepath.Glob(filepath.Join(s.backups, "spool-*.db"))
	if err != nil || len(names) != 1 {
		t.Fatalf("the backup recipe made %v (%v), want one spool-DATE.db", names, err)
	}
	if fi, err := os.Stat(s.backups); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the backups' folder after the recipe: %v, want mode 0700", err)
	}
	return names[0]
}

// backupSteps are docs/OPERATING.md's "Backups" recipes: SQLite's and
// PostgreSQL's.
func backupSteps(t *testing.T) []string {
	t.Helper()
	steps := recipe(t, "### Backups")
	if len(steps) != 2 || !strings.Contains(steps[0], "\nsqlite3 ") || !strings.Contains(steps[1], "\npg_dump ") {
		t.Fatalf("docs/OPERATING.md, Backups: shell blocks %q, want 2 (the sqlite3 backup, the pg_dump)", steps)
	}
	return steps
}

// restoreSteps are docs/OPERATING.md's "Restoring a backup" recipes: the
// operator's with SQLite, with PostgreSQL, and the user's.
func restoreSteps(t *testing.T) []string {
	t.Helper()
	steps := recipe(t, "### Restoring a backup")
	if len(steps) != 3 || !strings.Contains(steps[0], "spool.db") || !strings.Contains(steps[1], "pg_restore ") ||
		!strings.Contains(steps[2], "cspool recover ") {
		t.Fatalf("docs/OPERATING.md, Restoring a backup: shell blocks %q, want 3 (the operator's with SQLite, with PostgreSQL, the user's)", steps)
	}
	return steps
}

// restoreSpool runs the operator's recipe of "Restoring a backup" as
// written on backup (backupSpool's), stopping and starting the server
// where it says.
func (s *restoreSetup) restoreSpool(t *testing.T, backup string) {
	t.Helper()
	runRecipe(t, restoreSteps(t)[0], s.dir, s.env, append(s.spoolPaths(), "spool-2026-03-01.db", filepath.Base(backup)), func(l string) {
		switch l {
		case "systemctl stop cspool-server":
			s.server.stop(t, syscall.SIGTERM, 45*time.Second)
		case "systemctl start cspool-server":
			s.startServer(t)
		default:
			t.Fatalf("unexpected %q in the operator's recipe", l)
		}
	})
}

// recoverDevice runs the user's recipe of "Restoring a backup" as written
// on d, stopping and starting its daemon where it says, and returns what
// it printed.
// awaitRollbackAlarm waits until d's status lists the alarm of a log
// rolled back.
func (d *deviceDaemon) awaitRollbackAlarm(t *testing.T) {
	t.Helper()
	d.report(t, "the rollback alarm", func(r *statuspage.Report) bool {
		return slices.ContainsFunc(r.Alarms, func(a string) bool { return strings.Contains(a, "rolled back") })
	})
}

// recoverSaying runs the recovery on d (recoverDevice) and fails the test
// unless its output says each of wants; it returns the output.
func (s *restoreSetup) recoverSaying(t *testing.T, d *deviceDaemon, wants ...string) string {
	t.Helper()
	out := s.recoverDevice(t, d)
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("cspool recover did not say %q:\n%s", want, out)
		}
	}
	return out
}

func (s *restoreSetup) recoverDevice(t *testing.T, d *deviceDaemon) string {
	t.Helper()
	return runRecipe(t, restoreSteps(t)[2], d.home, s.deviceEnv(d), []string{"https://spool.example.org:3999", s.url}, func(l string) {
		switch l {
		case "systemctl --user stop cspool-imap@alice":
			if !d.daemon.exited {
				d.stop(t)
			}
		case "systemctl --user start cspool-imap@alice":
			s.start(t, d)
		default:
			t.Fatalf("unexpected %q in the user's recipe", l)
		}
	})
}

// TestRecoverAfterRestore follows docs/OPERATING.md ("Backups", "Restoring
// a backup") as written, with two devices and changes on both sides of the
// restore: mail is delivered and changed, the spool backed up with the
// documented command, more mail delivered and changed on both devices (one
// of them stopped early, so the other holds more), the backup restored as
// documented, mail delivered again (to positions both devices had
// applied), and the documented recovery run on the device that holds
// less, then on the one its daemon asks to. Every device, and a new one,
// then shows exactly what was acknowledged, and no mail client sees a UID
// name another message under the same UIDVALIDITY.
func TestRecoverAfterRestore(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	needTool(t, "sqlite3", "sqlite3")
	bin := buildServerBinary(t)
	s := newRestoreSetup(t, bin, python)
	a, b := s.newDevice(t, "a"), s.newDevice(t, "b")
	s.start(t, a)
	s.start(t, b)
	if a.password == "" || b.password == "" {
		t.Fatal("the daemons named no generated password")
	}

	m := s.deliver(t, 4)
	s.synced(t, a)
	s.imap(t, a, []string{"flag", "INBOX", m[0], `\Flagged`})
	s.synced(t, a)
	s.synced(t, b)

	backup := s.backupSpool(t)

	m = append(m, s.deliver(t, 2)...) // m[4], m[5]
	s.synced(t, a)
	s.imap(t, a, []string{"expunge", "INBOX", m[1]}, []string{"move", "INBOX", m[2], "Archive"}, []string{"create", "Projects"})
	s.synced(t, a)
	s.synced(t, b)
	a.stop(t)
	m = append(m, s.deliver(t, 1)...) // m[6]: only b has it
	s.synced(t, b)
	s.imap(t, b, []string{"flag", "INBOX", m[4], `\Seen`})
	s.synced(t, b)
	seenB := s.list(t, b)

	s.restoreSpool(t, backup)

	n := s.deliver(t, 2) // at positions both devices applied before the restore
	b.awaitRollbackAlarm(t)

	// The user's recipe on a, whose daemon is stopped already.
	recover := func(d *deviceDaemon) string { return s.recoverDevice(t, d) }
	out := recover(a)
	for _, want := range []string{"restored head: position 5 ", "message bytes put back: 2 messages", "new UIDVALIDITY: INBOX", "synced to position"} {
		if !strings.Contains(out, want) {
			t.Errorf("cspool recover on a did not say %q:\n%s", want, out)
		}
	}
	s.synced(t, a)
	// b holds m[6] and its flag on m[4], which a never had.
	r := b.report(t, "the alarm asking to recover b", func(r *statuspage.Report) bool {
		return slices.ContainsFunc(r.Alarms, func(a string) bool { return strings.Contains(a, "run cspool recover on this device") })
	})
	t.Logf("b's alarm: %q", r.Alarms)
	s.imap(t, a, []string{"flag", "INBOX", n[0], `\Flagged`}) // after the restore, before b recovers
	out = recover(b)
	if !strings.Contains(out, "message bytes put back: 1 messages") {
		t.Errorf("cspool recover on b did not put back m[6] alone:\n%s", out)
	}
	last := s.deliver(t, 1)
	s.synced(t, a)
	s.synced(t, b)

	// A new device, with cspool sync.
	c := s.newDevice(t, "c")
	conf := filepath.Join(c.home, ".config", "cspool")
	runCmd(t, c.home, s.deviceEnv(c), "", bin, "sync", "--config", filepath.Join(conf, "alice.conf"))

	viewA, viewB := s.list(t, a), s.list(t, b)
	noUIDReused(t, "b", seenB, viewB)
	noUIDReused(t, "a", seenB, viewA)
	a.stop(t)
	b.stop(t)
	want := s.dumpOf(t, a.db)
	for _, d := range []*deviceDaemon{b, c} {
		if diff := mailstore.Diff(want, s.dumpOf(t, d.db), 5); diff != nil {
			t.Errorf("%s differs from a: %v", d.name, diff)
		}
	}

	// What was acknowledged, on every side of the restore.
	expect := map[string]string{
		m[0]: `INBOX \Flagged`, m[2]: "Archive", m[3]: "INBOX", m[4]: `INBOX \Seen`, m[5]: "INBOX", m[6]: "INBOX",
		n[0]: `INBOX \Flagged`, n[1]: "INBOX", last[0]: "INBOX",
	}
	s.checkPlaced(t, want, expect, m[1], "before the restore")
}

func (s *restoreSetup) dumpOf(t *testing.T, path string) *mailstore.State {
	t.Helper()
	d, err := openTestStore(t, path, s.userKey).Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}
