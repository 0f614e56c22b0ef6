package main

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"cspool/internal/keys"
	"cspool/internal/statuspage"
)

// replaceKeyCommands returns the commands docs/OPERATING.md's "Replacing a
// user's key" gives in its steps (in backquotes, each on one line once its
// line breaks are undone), by the words they start with.
func replaceKeyCommands(t *testing.T) map[string]string {
	t.Helper()
	cmds := map[string]string{}
	for _, c := range inlineCode(operatingSection(t, "### Replacing a user's key")) {
		for _, p := range []string{"cspool export ", "cspool gen-keys --passphrase", "systemctl reload"} {
			if strings.HasPrefix(c, p) {
				cmds[p] = c
			}
		}
	}
	if len(cmds) != 3 {
		t.Fatalf("docs/OPERATING.md, Replacing a user's key: commands %q, want the export, the gen-keys and the reload", cmds)
	}
	return cmds
}

// TestReplaceUserKeyRecipe follows docs/OPERATING.md, "Replacing a user's
// key", as an operator and a user would, with the commands it gives: a
// spool server with a users file and an LMTP listener, set up from config
// files as docs/systemd/README.md's; two devices of alice's, each a daemon
// started as the documented user unit does, holding mail in two mailboxes
// with flags changed on both. Step 1 exports the mail from one of them
// (its daemon running); step 2 makes the new pair with the documented
// gen-keys (a passphrase file in place of the terminal), replaces alice's
// line in the users file and reloads the server (SIGHUP): the old key gets
// 401 and both devices stop syncing, keeping their mail, whatever read
// they were waiting on. Step 3 moves each device's database aside and
// starts its daemon with the new pair: the "sealed to another key" alarm
// for every entry before the change, each kept in DB.misdelivered/, and
// only the mail delivered after it. Step 4 uploads the export over IMAP
// (APPEND, with each message's flags and date) on one device, which every
// device gets through the log, then removes DB.misdelivered/ and restarts
// every daemon: the alarm ends, and every device shows every message from
// before and after the change, in its mailbox with its flags, its date
// and its bytes (the export made with --crlf, as the recipe says).
func TestReplaceUserKeyRecipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	cmds := replaceKeyCommands(t)
	if cmds["systemctl reload"] != "systemctl reload cspool-server" {
		t.Fatalf("the recipe reloads with %q, want systemctl reload cspool-server (the unit's ExecReload, SIGHUP)", cmds["systemctl reload"])
	}

	// The operator's spool server, its settings in server.conf as
	// docs/systemd/README.md writes them (loopback, free ports, no TLS),
	// its spool key on the command line as the unit passes it.
	s := &restoreSetup{bin: bin, dir: t.TempDir(), python: python, subjects: map[[32]byte]string{}}
	s.env = append(os.Environ(), "USER=alice", "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	etc := filepath.Join(s.dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	runCmd(t, etc, s.env, "", bin, "gen-keys", "--comment", "spool key", "spool.sec", "spool.pub")
	runCmd(t, s.dir, s.env, "", bin, "gen-keys", "user.sec", "user.pub") // alice's, made on her first device
	if err := os.Rename(filepath.Join(etc, "spool.pub"), filepath.Join(s.dir, "spool.pub")); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.userKey, err = keys.LoadSecret(filepath.Join(s.dir, "user.sec")); err != nil {
		t.Fatal(err)
	}
	s.spoolDir = filepath.Join(s.dir, "spool")
	usersPath := filepath.Join(etc, "users")
	s.port = freePort(t)
	s.url = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := fmt.Sprintf("addr         = 127.0.0.1\nport         = %d\nspool-dir    = %s\nusers        = %s\nlmtp         = %s\nlmtp-domains = example.org\n",
		s.port, s.spoolDir, usersPath, lmtpAddr)
	if err := os.WriteFile(filepath.Join(etc, "server.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(usersPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s.server = startProc(t, "cspool server", etc, s.env, bin, "server", "--config", "server.conf", "--spool-key", "spool.sec")
	waitHealthy(t, s.url, s.server)
	reloads := 0
	reload := func() { // systemctl reload cspool-server: the unit's ExecReload
		t.Helper()
		if err := s.server.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		reloads++
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(s.server.stderr.String()+s.server.stdout.String(), "users reloaded") < reloads {
			if time.Now().After(deadline) || strings.Contains(s.server.stderr.String(), "users reload failed") {
				t.Fatalf("the server did not reload its users file")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// docs/systemd/README.md: the operator adds alice's line and reloads,
	// with the README's step as printed.
	if err := os.WriteFile(filepath.Join(etc, "alice.pub"), readOrFail(t, filepath.Join(s.dir, "user.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	var addUser string
	for _, st := range systemdRecipe(t) {
		if strings.Contains(st.script, ">> /etc/cspool/users") {
			addUser = st.script
		}
	}
	if addUser == "" {
		t.Fatal("docs/systemd/README.md: no operator step adding alice to the users file")
	}
	runRecipe(t, addUser, etc, s.env, []string{"/etc/cspool/users", usersPath}, func(l string) {
		if l != "systemctl reload cspool-server" {
			t.Fatalf("unexpected %q in the operator's step", l)
		}
		reload()
	})

	subjects := map[string]string{} // subject -> body, every message delivered
	deliver := func(subject string) {
		t.Helper()
		body := fmt.Sprintf("The message %q.\r\n", subject)
		conn, err := net.DialTimeout("tcp", lmtpAddr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		lc := smtp.NewClientLMTP(conn)
		defer lc.Close()
		msg := fmt.Sprintf("From: bob@example.net\r\nTo: alice@example.org\r\nSubject: %s\r\n\r\n%s", subject, body)
		if err := lc.SendMail("bob@example.net", []string{"alice@example.org"}, strings.NewReader(msg)); err != nil {
			t.Fatalf("LMTP delivery of %q: %v", subject, err)
		}
		subjects[subject] = body
	}

	a, b := s.newDevice(t, "a"), s.newDevice(t, "b")
	s.start(t, a)
	s.start(t, b)
	for _, subj := range []string{"before 1", "before 2", "before 3", "before 4"} {
		deliver(subj)
	}
	s.synced(t, a)
	s.imap(t, a, []string{"flag", "INBOX", "before 1", `\Flagged`}, []string{"flag", "INBOX", "before 2", `\Seen \Answered`},
		[]string{"move", "INBOX", "before 3", "Archive"})
	s.synced(t, a)
	s.synced(t, b)
	s.imap(t, b, []string{"flag", "Archive", "before 3", `\Seen`})
	s.synced(t, b)
	s.synced(t, a)
	before := mailOf(s.list(t, a))
	want := map[string]string{
		"INBOX before 1": `\Flagged`, "INBOX before 2": `\Answered \Seen`, "Archive before 3": `\Seen`, "INBOX before 4": "",
	}
	if !maps.Equal(before, want) {
		t.Fatalf("a before the change: %q, want %q", before, want)
	}
	if got := mailOf(s.list(t, b)); !maps.Equal(got, want) {
		t.Fatalf("b before the change: %q, want %q", got, want)
	}
	changedAt := s.head(t) // every entry up to here is sealed to the old key
	dates := internalDates(t, a)
	raw := map[string][]byte{} // subject -> the message as a mail client fetched it before the change
	for _, box := range []string{"INBOX", "Archive"} {
		for _, m := range fetchIMAPBox(t, python, "127.0.0.1", fmt.Sprint(a.imapPort), "alice", a.password, box, 1) {
			raw[headerValue(strings.ReplaceAll(string(m), "\r\n", "\n"), "Subject")] = m
		}
	}

	// Step 1, on a (synced, no alarm, its daemon running): no sending, so
	// no outbox and no Outbox line in cspool status.
	aConf := filepath.Join(a.home, ".config", "cspool", "alice.conf")
	if out := runCmd(t, a.home, s.deviceEnv(a), "", bin, "status", "--config", aConf); strings.Contains(out, "Outbox") || !strings.Contains(out, "Position:") {
		t.Errorf("cspool status on a device without sending:\n%s\nwant no Outbox line", out)
	}
	runRecipe(t, cmds["cspool export "], a.home, s.deviceEnv(a), nil, nil)
	export := filepath.Join(a.home, "mail-before-new-key")
	exported := readMaildirs(t, export)
	if len(exported) != 4 {
		t.Fatalf("the export holds %d messages, want 4: %v", len(exported), exported)
	}

	// Step 2: the new pair, under new names (a passphrase file in place
	// of the terminal), on a; b gets a copy, as of any pair.
	aCfgDir := filepath.Join(a.home, ".config", "cspool")
	if err := os.WriteFile(filepath.Join(aCfgDir, "passphrase"), []byte("new key's passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runRecipe(t, cmds["cspool gen-keys --passphrase"], a.home, s.deviceEnv(a),
		[]string{"--passphrase ", "--passphrase --new-passphrase-file ~/.config/cspool/passphrase "}, nil)
	var newLine string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "public key: "); ok {
			newLine = strings.TrimSpace(v)
		}
	}
	if !strings.HasPrefix(newLine, "cspool-pub-1:") {
		t.Fatalf("gen-keys printed no public key line:\n%s", out)
	}
	newKey, err := keys.LoadSecretWith(filepath.Join(aCfgDir, "user-new.sec"), func(string) (string, error) { return "new key's passphrase", nil })
	if err != nil || !newKey.Protected {
		t.Fatalf("the new secret key: %v (protected %v)", err, newKey.Protected)
	}
	bCfgDir := filepath.Join(b.home, ".config", "cspool")
	for _, f := range []string{"user-new.sec", "user-new.pub", "passphrase"} {
		if err := os.WriteFile(filepath.Join(bCfgDir, f), readOrFail(t, filepath.Join(aCfgDir, f)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The operator replaces alice's line and reloads.
	users := readOrFail(t, usersPath)
	oldLine := "alice " + s.userKey.Public().String()
	if !bytes.Contains(users, []byte(oldLine)) {
		t.Fatalf("users file %q lacks alice's line", users)
	}
	if err := os.WriteFile(usersPath, bytes.Replace(users, []byte(oldLine), []byte("alice "+newLine), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	reload()
	s.userKey = newKey.Key

	// Mail delivered now is sealed to the new key. Each old device gets
	// 401 and stops syncing, a read it was waiting on included: it never
	// reads that delivery (before, the waiting read brought it, and the
	// device kept it as sealed to another key, with the alarm).
	deliver("after 1")
	for _, d := range []*deviceDaemon{a, b} {
		r := d.report(t, "401 and the end of syncing", func(r *statuspage.Report) bool {
			return strings.Contains(r.Sync.LastError, "401") && strings.Contains(d.daemon.stderr.String(), "cannot sync with the spool until this is fixed")
		})
		t.Logf("%s with the old key: position %d, last error %q, alarms %q", d.name, r.Sync.Position, r.Sync.LastError, r.Alarms)
		if r.Sync.Position > changedAt || len(r.Alarms) != 0 {
			t.Errorf("%s with the old key read past the change: position %d (change at %d), alarms %q", d.name, r.Sync.Position, changedAt, r.Alarms)
		}
		if got := mailOf(s.list(t, d)); !maps.Equal(got, want) {
			t.Errorf("%s with the old key keeps %q, want %q", d.name, got, want)
		}
	}
	// The old key's delivery is refused now (cspool deliver exits 65).
	if code, o, e := runExitStdin(t, s.dir, s.env, []byte("Subject: old key\r\n\r\nx\r\n"), bin, "deliver", "--user", "alice",
		"--user-key", "user.pub", "--spool-key", filepath.Join(etc, "spool.sec"), "--spool-server", s.url); code != 65 {
		t.Errorf("cspool deliver sealed to the old key after the change: exit %d, want 65\n%s%s", code, o, e)
	}

	// Step 3, on each device: the daemon stopped, the old database and
	// its files moved away, the config pointed at the new pair, the
	// daemon started.
	for _, d := range []*deviceDaemon{a, b} {
		d.stop(t)
		cfgDir := filepath.Join(d.home, ".config", "cspool")
		cfg := filepath.Join(cfgDir, "alice.conf")
		text := string(readOrFail(t, cfg))
		text = strings.Replace(text, filepath.Join(cfgDir, "alice.sec"), filepath.Join(cfgDir, "user-new.sec"), 1)
		text = strings.Replace(text, filepath.Join(cfgDir, "alice.pub"), filepath.Join(cfgDir, "user-new.pub"), 1)
		text += "passphrase-file = " + filepath.Join(cfgDir, "passphrase") + "\n"
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		// The new key does not open the old database.
		if code, o, e := runExit(t, d.home, s.deviceEnv(d), bin, "sync", "--config", cfg); code == 0 || !strings.Contains(o+e, "encrypted with another key") {
			t.Errorf("cspool sync with the new key on %s's old database: exit %d, want a failure naming \"encrypted with another key\"\n%s%s", d.name, code, o, e)
		}
		left := filesBeside(t, d.db)
		aside := filepath.Join(filepath.Dir(d.db), "old-key")
		if err := os.Mkdir(aside, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{d.db, d.db + ".outbox", d.db + ".password"} {
			if err := os.Rename(f, filepath.Join(aside, filepath.Base(f))); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		t.Logf("%s: beside the database after the daemon stopped: %q; left after the move: %q", d.name, left, filesBeside(t, d.db))
		s.start(t, d)
	}
	deliver("after 2")
	head := s.head(t)
	for _, d := range []*deviceDaemon{a, b} {
		r := d.report(t, "the whole log, with the alarm", func(r *statuspage.Report) bool {
			return r.Sync.Position == head && slices.ContainsFunc(r.Alarms, func(a string) bool { return strings.Contains(a, "sealed to another key") })
		})
		t.Logf("%s with the new key: alarms %q", d.name, r.Alarms)
		for pos := uint64(1); pos <= changedAt; pos++ {
			if _, err := os.Stat(filepath.Join(d.db+".misdelivered", fmt.Sprintf("%d.entry", pos))); err != nil {
				t.Errorf("%s: the entry at %d, sealed to the old key, is not kept: %v", d.name, pos, err)
			}
		}
		if got, w := mailOf(s.list(t, d)), map[string]string{"INBOX after 1": "", "INBOX after 2": ""}; !maps.Equal(got, w) {
			t.Errorf("%s with the new key shows %q, want only the mail after the change, %q", d.name, got, w)
		}
		if alert := loginAlert(t, d.imapPort, d.password); !strings.Contains(alert, "sealed to another key") {
			t.Errorf("%s: IMAP login alert %q, want the sealed-to-another-key alarm", d.name, alert)
		}
	}
	// The old key still opens what the new devices keep.
	if msg := runCmd(t, s.dir, s.env, "", bin, "open-entry", "--user-key", "user.sec", "--spool-key", "spool.pub", "--user", "alice",
		filepath.Join(b.db+".misdelivered", "1.entry")); !strings.Contains(msg, "Subject: before 1") {
		t.Errorf("cspool open-entry with the old key on the first kept entry: %q", msg)
	}

	// Step 4: the export back through IMAP on b, every device gets it.
	n := appendMaildirs(t, b, export)
	deliver("after 3")
	head = s.head(t)
	want = map[string]string{
		"INBOX before 1": `\Flagged`, "INBOX before 2": `\Answered \Seen`, "Archive before 3": `\Seen`, "INBOX before 4": "",
		"INBOX after 1": "", "INBOX after 2": "", "INBOX after 3": "",
	}
	for _, d := range []*deviceDaemon{a, b} {
		d.report(t, "the uploaded mail", func(r *statuspage.Report) bool { return r.Sync.Position == head })
		if got := mailOf(s.list(t, d)); !maps.Equal(got, want) {
			t.Errorf("%s after the upload of %d messages: %q, want %q", d.name, n, got, want)
		}
	}
	// Then, on every device: the daemon stopped, DB.misdelivered/
	// removed, the daemon started: no alarm.
	for _, d := range []*deviceDaemon{a, b} {
		d.stop(t)
		if err := os.RemoveAll(d.db + ".misdelivered"); err != nil {
			t.Fatal(err)
		}
		s.start(t, d)
		s.synced(t, d)
		if alert := loginAlert(t, d.imapPort, d.password); alert != "" {
			t.Errorf("%s: IMAP login alert %q after DB.misdelivered/ was removed, want none", d.name, alert)
		}
	}
	// Every message from before and after the change, on each device, in
	// its mailbox, with its flags, its date and its bytes.
	deliver("after 4")
	want["INBOX after 4"] = ""
	for _, d := range []*deviceDaemon{a, b} {
		s.synced(t, d)
		if got := mailOf(s.list(t, d)); !maps.Equal(got, want) {
			t.Errorf("%s at the end: %q, want %q", d.name, got, want)
		}
		now := internalDates(t, d)
		for k, date := range dates {
			if !now[k].Equal(date.Truncate(time.Second)) {
				t.Errorf("%s: %s dated %v, put back from the export; before the change %v", d.name, k, now[k], date)
			}
		}
		for _, box := range []string{"INBOX", "Archive"} {
			for _, m := range fetchIMAPBox(t, python, "127.0.0.1", fmt.Sprint(d.imapPort), "alice", d.password, box, 0) {
				text := strings.ReplaceAll(string(m), "\r\n", "\n")
				subj := headerValue(text, "Subject")
				if body, ok := subjects[subj]; !ok || !strings.HasSuffix(text, "\n\n"+strings.ReplaceAll(body, "\r\n", "\n")) {
					t.Errorf("%s, %s: message %q is not the one delivered", d.name, box, m)
				}
				if r, ok := raw[subj]; ok && !bytes.Equal(r, m) {
					t.Errorf("%s, %s: message %q, put back from the export, is %q; before the change it was %q", d.name, box, subj, m, r)
				}
			}
		}
	}
}

// readOrFail is the content of the file at path.
func readOrFail(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mailOf is a client view as "MAILBOX SUBJECT" -> its flags, sorted and
// joined by spaces.
func mailOf(v clientView) map[string]string {
	out := map[string]string{}
	for box, mb := range v {
		for _, m := range mb.Messages {
			var flags []string
			for _, f := range m[2].([]any) {
				flags = append(flags, f.(string))
			}
			sort.Strings(flags)
			out[box+" "+m[1].(string)] = strings.Join(flags, " ")
		}
	}
	return out
}

// filesBeside lists the names in db's folder that begin with its name.
func filesBeside(t *testing.T, db string) []string {
	t.Helper()
	names, err := filepath.Glob(db + "*")
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	return names
}

// maildirMessage is a message of an exported Maildir.
type maildirMessage struct {
	box   string
	path  string
	flags []imap.Flag
	date  time.Time
}

// maildirInfoFlags are the Maildir info letters and their IMAP flags
// (docs/OPERATING.md, "Taking the mail elsewhere").
var maildirInfoFlags = map[rune]imap.Flag{'D': imap.FlagDraft, 'F': imap.FlagFlagged, 'P': "$Forwarded", 'R': imap.FlagAnswered, 'S': imap.FlagSeen, 'T': imap.FlagDeleted}

// readMaildirs reads the Maildirs under dir, as a tool that uploads them
// would: the mailbox from the folder, the flags from the file name, the
// date from the file's time.
func readMaildirs(t *testing.T, dir string) []maildirMessage {
	t.Helper()
	var out []maildirMessage
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		sub := filepath.Base(filepath.Dir(path))
		if sub == "new" || sub == "tmp" {
			return fmt.Errorf("%s: a message outside cur/", path)
		}
		if sub != "cur" {
			return nil
		}
		rel, err := filepath.Rel(dir, filepath.Dir(filepath.Dir(path)))
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		m := maildirMessage{box: filepath.ToSlash(rel), path: path, date: fi.ModTime()}
		_, info, ok := strings.Cut(e.Name(), ":2,")
		if !ok {
			return fmt.Errorf("%s: no :2, in the name", path)
		}
		for _, c := range info {
			if f, ok := maildirInfoFlags[c]; ok {
				m.flags = append(m.flags, f)
			}
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// appendMaildirs uploads the Maildirs under dir to d over IMAP (CREATE
// where the mailbox is missing, then APPEND with each message's flags and date) and returns how many
// messages it appended.
func appendMaildirs(t *testing.T, d *deviceDaemon, dir string) int {
	t.Helper()
	msgs := readMaildirs(t, dir)
	c, err := imapclient.DialInsecure(fmt.Sprintf("127.0.0.1:%d", d.imapPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", d.password).Wait(); err != nil {
		t.Fatal(err)
	}
	made := map[string]bool{}
	boxes, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range boxes {
		made[b.Mailbox] = true
	}
	for _, m := range msgs {
		if !made[m.box] {
			if err := c.Create(m.box, nil).Wait(); err != nil {
				t.Fatalf("CREATE %s: %v", m.box, err)
			}
			made[m.box] = true
		}
		b := readOrFail(t, m.path)
		cmd := c.Append(m.box, int64(len(b)), &imap.AppendOptions{Flags: m.flags, Time: m.date})
		if _, err := cmd.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := cmd.Wait(); err != nil {
			t.Fatalf("APPEND %s to %s: %v", m.path, m.box, err)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		t.Error(err)
	}
	return len(msgs)
}

// headerValue is the value of the first header field name in msg (LF line
// ends).
func headerValue(msg, name string) string {
	head, _, _ := strings.Cut(msg, "\n\n")
	for _, l := range strings.Split(head, "\n") {
		if v, ok := strings.CutPrefix(l, name+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// internalDates is each message's INTERNALDATE on d, by "MAILBOX SUBJECT".
func internalDates(t *testing.T, d *deviceDaemon) map[string]time.Time {
	t.Helper()
	c, err := imapclient.DialInsecure(fmt.Sprintf("127.0.0.1:%d", d.imapPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", d.password).Wait(); err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, box := range []string{"INBOX", "Archive"} {
		sel, err := c.Select(box, &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			t.Fatalf("SELECT %s on %s: %v", box, d.name, err)
		}
		if sel.NumMessages == 0 {
			continue
		}
		var all imap.SeqSet
		all.AddRange(1, sel.NumMessages)
		msgs, err := c.Fetch(all, &imap.FetchOptions{Envelope: true, InternalDate: true}).Collect()
		if err != nil {
			t.Fatalf("FETCH in %s on %s: %v", box, d.name, err)
		}
		for _, m := range msgs {
			out[box+" "+m.Envelope.Subject] = m.InternalDate
		}
	}
	if err := c.Logout().Wait(); err != nil {
		t.Error(err)
	}
	return out
}
