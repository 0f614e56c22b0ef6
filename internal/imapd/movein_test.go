package imapd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// moveInHome writes QUICKSTART.md's mbsync configuration for the old
// account at far and the device at near into a home folder of the test's
// own, and returns its path and the environment that runs mbsync there.
func moveInHome(t *testing.T, far, near string) (cfg string, env []string) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(home, ".mbsync-move-in")
	if err := os.WriteFile(cfg, []byte(quickstartMoveIn(t, far, near)), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, append(os.Environ(), "HOME="+home)
}

// moveInCommand returns docs/QUICKSTART.md's command that runs the move
// (the sh block of "Moving existing mail in"), as printed: it makes
// mbsync's state folder and runs mbsync on ~/.mbsync-move-in.
func moveInCommand(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "QUICKSTART.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Moving existing mail in\n")
	if !ok {
		t.Fatal(`docs/QUICKSTART.md has no "## Moving existing mail in"`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```sh\n")
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok || !strings.Contains(block, "mbsync -c ~/.mbsync-move-in move-in") {
		t.Fatal("docs/QUICKSTART.md, Moving existing mail in: no sh block running mbsync -c ~/.mbsync-move-in move-in")
	}
	return block
}

// runMoveIn runs moveInCommand with sh in the environment env (whose HOME
// holds the configuration) and returns what it printed.
func runMoveIn(t *testing.T, env []string) string {
	t.Helper()
	return runToolEnv(t, env, "sh", "-e", "-c", moveInCommand(t))
}

// quickstartMoveIn returns docs/QUICKSTART.md's mbsync configuration for
// moving existing mail in, with the accounts' host, port, user and
// password replaced by far's (the old provider's) and near's (the
// device's); everything else is as printed.
func quickstartMoveIn(t *testing.T, far, near string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "QUICKSTART.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```\nIMAPAccount old\n")
	if !ok {
		t.Fatal(`docs/QUICKSTART.md has no block of mbsync's settings (starting "IMAPAccount old")`)
	}
	block, _, ok := strings.Cut("IMAPAccount old\n"+rest, "```")
	if !ok {
		t.Fatal("docs/QUICKSTART.md: the block of mbsync's settings does not end")
	}
	addr := map[string]string{"old": far, "cspool": near}
	var out []string
	account := ""
	for line := range strings.Lines(block) {
		line = strings.TrimRight(line, "\n")
		key, val, _ := strings.Cut(line, " ")
		if key == "IMAPAccount" {
			account = val
		} else if line == "" {
			account = ""
		}
		if a, ok := addr[account]; ok {
			host, port, _ := net.SplitHostPort(a)
			switch key {
			case "Host":
				line = "Host " + host
			case "Port":
				line = "Port " + port
			case "User":
				line = "User alice"
			case "Pass":
				line = `Pass "` + testPassword + `"`
			case "SSLType":
				// The private Dovecot, like the device, speaks no TLS.
				line = "SSLType None"
				if account == "old" {
					line += "\nAuthMechs LOGIN"
				}
			}
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n") + "\n"
}

// folderSnapshot is what a client sees of each message of each folder:
// its text (less mbsync's X-TUID field) and the line "flags date", by
// text; with uids, the line ends in the message's UID.
type folderSnapshot map[string]map[string]string

var (
	moveInUID   = regexp.MustCompile(`\(UID ([0-9]+) `)
	moveInFlags = regexp.MustCompile(`FLAGS \(([^)]*)\)`)
	moveInDate  = regexp.MustCompile(`INTERNALDATE "([^"]+)"`)
	moveInBody  = regexp.MustCompile(`BODY\[\] \{([0-9]+)\}\r\n`)
	moveInTUID  = regexp.MustCompile(`(?m)^X-TUID: [^\r\n]*\r\n`)
	moveInList  = regexp.MustCompile(`^\* LIST \(([^)]*)\) (?:"[^"]*"|NIL) (.*)\r\n$`)
)

// snapshot reads every folder's messages over IMAP, with their UIDs when
// uids is set, and the folders' special-use attributes.
func snapshot(t *testing.T, w *wire, uids bool) (folderSnapshot, map[string]string) {
	t.Helper()
	special := map[string]string{}
	var folders []string
	for _, l := range w.ok(`LIST "" "*" RETURN (SPECIAL-USE)`) {
		m := moveInList.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		name := m[2]
		if u, err := strconv.Unquote(name); err == nil {
			name = u
		}
		if strings.Contains(m[1], `\Noselect`) || strings.Contains(m[1], `\NonExistent`) {
			continue
		}
		folders = append(folders, name)
		var su []string
		for _, a := range strings.Fields(m[1]) {
			switch a {
			case `\Sent`, `\Drafts`, `\Trash`, `\Junk`, `\Archive`, `\All`, `\Flagged`:
				su = append(su, a)
			}
		}
		special[name] = strings.Join(su, " ")
	}
	snap := folderSnapshot{}
	for _, f := range folders {
		w.ok(`EXAMINE "` + f + `"`)
		meta := map[string]string{}
		for _, l := range w.ok("UID FETCH 1:* (UID FLAGS INTERNALDATE)") {
			u, fl, d := moveInUID.FindStringSubmatch(l), moveInFlags.FindStringSubmatch(l), moveInDate.FindStringSubmatch(l)
			if u == nil || fl == nil || d == nil {
				t.Fatalf("%s: a FETCH answer without UID, FLAGS or INTERNALDATE: %q", f, l)
			}
			var flags []string
			for _, x := range strings.Fields(fl[1]) {
				if x != `\Recent` {
					flags = append(flags, x)
				}
			}
			sort.Strings(flags)
			date, err := time.Parse("_2-Jan-2006 15:04:05 -0700", d[1])
			if err != nil {
				t.Fatalf("%s: INTERNALDATE %q: %v", f, d[1], err)
			}
			meta[u[1]] = strings.Join(flags, " ") + " " + date.UTC().Format(time.RFC3339)
			if uids {
				meta[u[1]] += " " + u[1]
			}
		}
		msgs := map[string]string{}
		for _, l := range w.ok("UID FETCH 1:* (UID BODY.PEEK[])") {
			u, b := moveInUID.FindStringSubmatch(l), moveInBody.FindStringSubmatchIndex(l)
			if u == nil || b == nil {
				t.Fatalf("%s: a FETCH answer without UID or BODY[]: %.200q", f, l)
			}
			n, _ := strconv.Atoi(l[b[2]:b[3]])
			raw := moveInTUID.ReplaceAllString(l[b[1]:b[1]+n], "")
			if _, dup := msgs[raw]; dup {
				t.Errorf("%s: UID %s is a second copy of a message: %.200q", f, u[1], raw)
			}
			msgs[raw] = meta[u[1]]
		}
		snap[f] = msgs
	}
	return snap, special
}

// TestMbsyncFromDovecot moves a user's mail from another provider's IMAP
// server (a private Dovecot) into a device with mbsync, IMAP to IMAP,
// configured as docs/QUICKSTART.md prints it. The old account has nested
// folders, Sent (\Sent), folders named in German, hundreds of messages
// with flags and keywords and old arrival dates, and odd ones: 8-bit
// header fields, no final line end, 2 MB, a NUL, bare line feeds. On the
// device every message is there once, byte for byte as Dovecot serves it
// (less mbsync's X-TUID field), with its flags, $Forwarded (the one
// keyword mbsync 1.4 carries) and its arrival date;
// a second run copies nothing; after a message arrives at the old
// account and flags change there, a third run brings both, every message
// keeping its UID; a second device shows the same.
func TestMbsyncFromDovecot(t *testing.T) {
	t.Parallel()
	needTool(t, "mbsync") // run by the documented command
	daddr := startDovecot(t, needToolIn(t, "dovecot", "dovecot-imapd"), `namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \Sent
  }
}`)
	old := dialWire(t, daddr)
	old.ok(`LOGIN alice "` + testPassword + `"`)
	for _, f := range []string{"Sent", "Projects", "Projects/2019", "Projects/2019/Q1", "Gr&APwA3w-e", "&AMQ-rger/Rechnungen", "INBOX/Sub", "Bills &- Tax", "Caf&AOk-/&ZeVnLIqe-"} {
		old.ok(`CREATE "` + f + `"`)
	}
	type msg struct {
		folder, flags, raw string
		date               time.Time
		binary             bool
	}
	var msgs []msg
	head := func(i int, subject string) string {
		return fmt.Sprintf("From: Old Friend <old@example.org>\r\nTo: alice@example.net\r\nSubject: %s\r\n"+
			"Date: Mon, 02 Mar 2015 10:00:00 +0100\r\nMessage-ID: <%d.move-in@example.org>\r\n", subject, i)
	}
	flagSets := []string{"", `\Seen`, `\Seen \Answered`, `\Flagged`, `\Seen $Forwarded`, `\Seen Work $Label1`, `\Draft`, `\Deleted \Seen`}
	folders := []string{"INBOX", "INBOX", "INBOX", "Sent", "INBOX/Sub", "Bills &- Tax", "Caf&AOk-/&ZeVnLIqe-", "Projects", "Projects/2019", "Projects/2019/Q1", "Gr&APwA3w-e", "&AMQ-rger/Rechnungen"}
	base := time.Date(2009, 6, 1, 8, 0, 0, 0, time.FixedZone("", 2*3600))
	for i := range 300 {
		msgs = append(msgs, msg{
			folder: folders[i%len(folders)],
			flags:  flagSets[i%len(flagSets)],
			raw:    head(i, fmt.Sprintf("message %d", i)) + "\r\n" + fmt.Sprintf("Hello number %d.\r\n", i),
			date:   base.Add(time.Duration(i) * 37 * time.Hour),
		})
	}
	big := strings.Repeat(strings.Repeat("QUJD", 19)+"\r\n", 27000)
	odd := []msg{
		{folder: "INBOX", flags: `\Seen`, raw: head(1000, "Gr\xfc\xdfe aus M\xfcnchen") + "Content-Type: text/plain; charset=iso-8859-1\r\n\r\nViele Gr\xfc\xdfe\r\n"},
		{folder: "INBOX", flags: "", raw: head(1001, "Grüße, UTF-8 ohne Kodierung") + "\r\nFür dich.\r\n"},
		{folder: "INBOX", flags: `\Seen`, raw: head(1002, "no final line end") + "\r\nthe last line has no end"},
		{folder: "Projects/2019", flags: `\Flagged Work`, raw: head(1003, "two megabytes") + "MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + big},
		{folder: "INBOX", flags: "", raw: head(1004, "a NUL in the body") + "\r\nbefore\x00after\r\n", binary: true},
		{folder: "Gr&APwA3w-e", flags: `\Seen`, raw: "From: Old Friend <old@example.org>\nSubject: bare line feeds\nMessage-ID: <1005.move-in@example.org>\n\nline one\nline two\n"},
		{folder: "Sent", flags: `\Seen`, raw: head(1006, "what I sent") + "\r\nSent by me.\r\n"},
	}
	for i := range odd {
		odd[i].date = time.Date(1999, 12, 31, 23, 59, 58-i, 0, time.FixedZone("", -5*3600))
	}
	msgs = append(msgs, odd...)
	for _, m := range msgs {
		lit := "{"
		if m.binary {
			lit = "~{"
		}
		old.ok(fmt.Sprintf(`APPEND "%s" (%s) "%s" %s%d}`+"\r\n%s", m.folder, m.flags, m.date.Format("02-Jan-2006 15:04:05 -0700"), lit, len(m.raw), m.raw))
	}
	// mbsync 1.4 carries the system flags and $Forwarded (its Maildir
	// flag P), no other keyword: the old account's Work and $Label1 stay
	// behind, as docs/QUICKSTART.md says.
	oldState := func() (folderSnapshot, map[string]string) {
		want, special := snapshot(t, old, false)
		for _, ms := range want {
			for raw, meta := range ms {
				i := strings.LastIndexByte(meta, ' ')
				var kept []string
				for _, f := range strings.Fields(meta[:i]) {
					if f != "Work" && f != "$Label1" {
						kept = append(kept, f)
					}
				}
				ms[raw] = strings.Join(kept, " ") + meta[i:]
			}
		}
		return want, special
	}
	want, wantSpecial := oldState()
	n := 0
	for _, f := range want {
		n += len(f)
	}
	if n != len(msgs) {
		t.Fatalf("Dovecot holds %d messages, %d appended", n, len(msgs))
	}

	r := newRig(t)
	a := r.device("a")
	_, env := moveInHome(t, daddr, a.addr)
	check := func(d *device, when string) folderSnapshot {
		t.Helper()
		w := loginWire(t, d.addr)
		got, special := snapshot(t, w, true)
		for f, ms := range want {
			g, ok := got[f]
			if !ok {
				t.Errorf("%s: no folder %q", when, f)
				continue
			}
			if wantSpecial[f] != "" && special[f] != wantSpecial[f] {
				t.Errorf("%s: folder %q is %q, want %q", when, f, special[f], wantSpecial[f])
			}
			if len(g) != len(ms) {
				t.Errorf("%s: %q holds %d messages, want %d", when, f, len(g), len(ms))
			}
			for raw, meta := range ms {
				gm, ok := g[raw]
				if !ok {
					t.Errorf("%s: %q lacks a message, or has it changed: %.200q", when, f, raw)
					continue
				}
				if gm[:strings.LastIndexByte(gm, ' ')] != meta {
					t.Errorf("%s: in %q, %.80q is %q, want %q (flags, date)", when, f, raw, gm, meta)
				}
			}
		}
		w.ok("LOGOUT")
		return got
	}
	runMoveIn(t, env)
	first := check(a, "after the move")
	runMoveIn(t, env)
	if again := check(a, "after a second run"); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("a second run changed the device's folders")
	}
	// Mail goes on arriving at the old account, and its flags change,
	// until the user has moved: the next run brings both.
	late := head(2000, "arrived after the move") + "\r\nLate.\r\n"
	old.ok(fmt.Sprintf("APPEND INBOX (\\Seen) \"01-Feb-2026 12:00:00 +0000\" {%d}\r\n%s", len(late), late))
	old.ok("SELECT INBOX")
	old.ok(`UID STORE 1:3 +FLAGS (\Flagged \Answered)`)
	old.ok(`UID STORE 4:6 -FLAGS (\Seen)`)
	old.ok(`UID STORE 7 +FLAGS ($Forwarded)`)
	want, _ = oldState()
	runMoveIn(t, env)
	third := check(a, "after changes at the old account")
	for f, ms := range first {
		for raw, meta := range ms {
			if u, v := meta[strings.LastIndexByte(meta, ' '):], third[f][raw]; !strings.HasSuffix(v, u) {
				t.Errorf("in %q, %.80q was %q and is %q: not the same UID", f, raw, meta, v)
			}
		}
	}
	first = third
	b := r.device("b")
	b.synced(r.Head())
	if other := check(b, "on a second device"); fmt.Sprint(other) != fmt.Sprint(first) {
		t.Errorf("a second device shows other messages, flags or UIDs than the first")
	}
}

// TestMbsyncFromDovecotTooBig moves mail in, as docs/QUICKSTART.md
// prints it, to a device that takes messages of up to 1 MiB: the 2 MB
// message is refused (NO [TOOBIG]), mbsync warns and goes on, and the
// others arrive; a second run ends well too and copies nothing twice.
func TestMbsyncFromDovecotTooBig(t *testing.T) {
	t.Parallel()
	needTool(t, "mbsync") // run by the documented command
	daddr := startDovecot(t, needToolIn(t, "dovecot", "dovecot-imapd"), "namespace inbox {\n  inbox = yes\n  separator = /\n}")
	old := dialWire(t, daddr)
	old.ok(`LOGIN alice "` + testPassword + `"`)
	body := map[string]string{"small": "Hello.\r\n", "big": strings.Repeat(strings.Repeat("QUJD", 19)+"\r\n", 27000), "after": "Bye.\r\n"}
	for i, s := range []string{"small", "big", "after"} {
		raw := fmt.Sprintf("From: old@example.org\r\nSubject: %s\r\nMessage-ID: <%d.big@example.org>\r\n\r\n%s", s, i, body[s])
		old.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(raw), raw))
	}
	r := newRig(t)
	a := r.deviceWith("a", Config{MaxMessageBytes: 1 << 20})
	_, env := moveInHome(t, daddr, a.addr)
	for run := range 2 {
		out := runMoveIn(t, env)
		if run == 0 && !strings.Contains(out, "near side refuses to store message") {
			t.Errorf("mbsync did not warn of the message too big:\n%s", out)
		}
		w := loginWire(t, a.addr)
		got, _ := snapshot(t, w, true)
		w.ok("LOGOUT")
		var subjects []string
		for raw := range got["INBOX"] {
			_, s, _ := strings.Cut(raw, "Subject: ")
			s, _, _ = strings.Cut(s, "\r\n")
			subjects = append(subjects, s)
		}
		sort.Strings(subjects)
		if fmt.Sprint(subjects) != "[after small]" {
			t.Errorf("run %d: INBOX holds %v, want [after small]", run+1, subjects)
		}
	}
}

// cutProxy forwards connections to target and, when the server's answer
// to the n-th APPEND has come, closes both ends instead of passing it
// on: the message is stored, but the client never hears so, as when a
// laptop goes to sleep mid-move.
func cutProxy(t *testing.T, target string, n int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	appended := regexp.MustCompile(`^\S+ OK \[APPENDUID `)
	var mu sync.Mutex
	count := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() {
				io.Copy(s, c)
				s.Close()
			}()
			go func() {
				defer c.Close()
				defer s.Close()
				br := bufio.NewReader(s)
				for {
					line, err := br.ReadString('\n')
					if appended.MatchString(line) {
						mu.Lock()
						count++
						cut := count == n
						mu.Unlock()
						if cut {
							return
						}
					}
					if _, werr := io.WriteString(c, line); werr != nil || err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestMbsyncFromDovecotCut moves mail in, as docs/QUICKSTART.md prints
// it, over a connection to the device that breaks just after the device
// stored the 40th message and before mbsync heard so; mbsync fails. Run
// again, it finds that message by its X-TUID field and every message is
// on the device once.
func TestMbsyncFromDovecotCut(t *testing.T) {
	t.Parallel()
	needTool(t, "mbsync") // run by the documented command
	daddr := startDovecot(t, needToolIn(t, "dovecot", "dovecot-imapd"), "namespace inbox {\n  inbox = yes\n  separator = /\n}")
	old := dialWire(t, daddr)
	old.ok(`LOGIN alice "` + testPassword + `"`)
	for i := range 80 {
		raw := fmt.Sprintf("From: old@example.org\r\nSubject: number %d\r\nMessage-ID: <%d.cut@example.org>\r\n\r\nHello.\r\n", i, i)
		old.ok(fmt.Sprintf("APPEND INBOX (\\Seen) {%d}\r\n%s", len(raw), raw))
	}
	r := newRig(t)
	a := r.device("a")
	cfg, env := moveInHome(t, daddr, cutProxy(t, a.addr, 40))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-e", "-c", moveInCommand(t))
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("mbsync ended well over a connection that broke:\n%s", out)
	}
	if err := os.WriteFile(cfg, []byte(quickstartMoveIn(t, daddr, a.addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	runMoveIn(t, env)
	w := loginWire(t, a.addr)
	got, _ := snapshot(t, w, false) // a second copy of a message is an error
	if n := len(got["INBOX"]); n != 80 {
		t.Errorf("INBOX holds %d messages, want 80", n)
	}
}
