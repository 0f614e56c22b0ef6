package imapd

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// muttConf is a muttrc for classic mutt: one IMAP account on the logging
// proxy, IDLE on and the mailbox checked every second while no key is
// typed, a header cache and a message cache in the test's folder, and no
// questions on save or quit. The index shows each message's flags (%Z:
// "!" for \Flagged) and subject.
const muttConf = `set folder="imap://alice@%[1]s/"
set imap_pass="%[2]s"
set spoolfile="+INBOX"
set ssl_starttls=no
set ssl_force_tls=no
set imap_idle=yes
set mail_check=1
set timeout=1
set header_cache="%[3]s/hcache"
set message_cachedir="%[3]s/bodies"
set index_format="%%4C %%Z %%s"
set sort=date
set wait_key=no
set mailcap_path=/dev/null
set quit=yes
set move=no
set delete=yes
set confirmappend=no
set confirmcreate=no
`

// TestMutt drives classic mutt (Debian's 2.2, with its header cache and
// message cache) in tmux, as a person would, through a proxy that records
// its IMAP conversation. In a first run it shows INBOX, opens the nested
// multipart message and shows its quoted-printable part decoded, flags it
// and saves it to Archive (mutt 2.2 moves with UID COPY, \Deleted and
// EXPUNGE, never MOVE), shows a delivery that lands while it idles, and
// the \Flagged another device sets, then deletes a message. The device's
// store then holds each change. While mutt is closed another device flags
// a message and a new one is delivered; a second run, from its header
// cache, asks for the flags of the cached UIDs and the headers of the new
// message alone, and shows both changes; it then opens the folder Grüße,
// named in UTF-8 (it enabled UTF8=ACCEPT). The conversation holds no NO
// or BAD. About 8 s.
func TestMutt(t *testing.T) {
	t.Parallel()
	mutt := needTool(t, "mutt")
	r := newRig(t)
	a := r.device("a")
	r.Deliver([]byte(messages["plain"]))
	a.synced(r.Deliver([]byte(nestedMessage)))
	b := r.device("b")
	// A folder whose name is not ASCII, with a message.
	w0 := loginWire(t, a.addr)
	w0.ok(`CREATE "Gr&APwA3w-e"`)
	w0.ok(fmt.Sprintf("APPEND \"Gr&APwA3w-e\" {%d}\r\n%s", len(messages["plain"]), messages["plain"]))
	proxy := newIMAPProxy(t, a.addr)

	dir := t.TempDir()
	rc := filepath.Join(dir, "muttrc")
	if err := os.WriteFile(rc, []byte(fmt.Sprintf(muttConf, proxy.addr, testPassword, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	run := fmt.Sprintf("%s -n -F %s", mutt, rc)
	env := []string{"TERM=xterm", "HOME=" + dir}
	tm := startTmux(t, env, run)
	// row waits for the index line that shows subject to match flags.
	row := func(tm *tmuxSession, subject string, flags *regexp.Regexp) {
		t.Helper()
		re := regexp.MustCompile(`(?m)^.*` + regexp.QuoteMeta(subject) + `.*$`)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			line := re.FindString(tm.screen())
			if line != "" && flags.MatchString(line) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("mutt's index line of %q did not match %v; the screen:\n%s", subject, flags, tm.screen())
			}
		}
	}
	// answered waits for a command matching re after line mark and the
	// server's OK to it.
	answered := func(what string, mark int, re string) {
		t.Helper()
		proxy.answeredOK(t, what, mark, regexp.MustCompile(re))
	}

	tm.waitFor("Lunch on Friday")
	tm.waitFor("Grüße nested")
	mark := len(proxy.lines())
	// The nested message (the newer, 2): opened, its first part decoded.
	tm.keys("2", "Enter", "Enter")
	tm.waitFor("café crème brûlée")
	answered("opening", mark, `^\S+ UID FETCH 2 BODY\.PEEK\[\]$`)
	tm.keys("i")
	tm.waitFor("Lunch on Friday")
	// Flagged, the flags written ($), then saved to Archive.
	mark = len(proxy.lines())
	tm.keys("F", "$")
	answered("flagging", mark, `^\S+ UID STORE 2 \+FLAGS\.SILENT \(\\Flagged\)$`)
	mark = len(proxy.lines())
	tm.keys("s")
	tm.waitFor("Save to mailbox")
	tm.keys("C-u", "=Archive", "Enter")
	answered("saving", mark, `^\S+ UID COPY 2 "?Archive"?$`)

	// A delivery while mutt idles, and a flag set on another device.
	a.synced(r.Deliver([]byte(messages["multipart"])))
	tm.waitFor("Résumé attached")
	b.synced(r.Head())
	wb := loginWire(t, b.addr)
	wb.ok("SELECT INBOX")
	wb.ok(`UID STORE 1 +FLAGS (\Flagged)`)
	row(tm, "Lunch on Friday", regexp.MustCompile(`!`))

	// The plain one (1) deleted, and the mailbox written: both deleted
	// messages expunged.
	mark = len(proxy.lines())
	tm.keys("1", "Enter", "d", "$")
	answered("deleting", mark, `^\S+ UID STORE 1:2 \+FLAGS\.SILENT \(\\Deleted\)$`)
	answered("expunging", mark, `^\S+ EXPUNGE$`)
	tm.keys("q")
	answered("leaving", mark, `^\S+ LOGOUT$`)

	inbox, _ := scanBox(t, a, "INBOX")
	if !regexp.MustCompile(`^3\[[^]]*\]$`).MatchString(inbox) {
		t.Errorf("INBOX after mutt's save and delete: %s, want message 3 alone", inbox)
	}
	list, raw := scanBox(t, a, "Archive")
	if len(raw) != 1 || !strings.Contains(list, `\Flagged`) || !strings.Contains(list, `\Seen`) {
		t.Errorf("Archive after mutt's flag and save: %s, want one message, flagged and seen", list)
	}
	for _, m := range raw {
		if string(m) != nestedMessage {
			t.Errorf("Archive after mutt's save holds %q, want the nested message as delivered", m)
		}
	}

	// While mutt is closed: a flag on another device, and a delivery.
	wb.ok(`UID STORE 3 +FLAGS (\Flagged)`)
	a.synced(r.Deliver(another("plain")))
	mark = len(proxy.lines())
	tm = startTmux(t, env, run)
	tm.waitFor("Lunch on Friday")
	row(tm, "Résumé attached", regexp.MustCompile(`!`))
	answered("refreshing the cached flags", mark, `^\S+ UID FETCH 1:3 \(UID FLAGS\)$`)
	headers := regexp.MustCompile(`(?i)^\S+ (UID )?FETCH (\S+) \(UID FLAGS INTERNALDATE RFC822\.SIZE BODY\.PEEK\[HEADER\.FIELDS`)
	for _, l := range proxy.lines()[mark:] {
		if m := headers.FindStringSubmatch(l.text); l.from == 'C' && m != nil && m[2] != "2" {
			t.Errorf("mutt, from its header cache, fetched headers of more than the new message 2: %q", l.text)
		}
	}
	// A folder whose name is not ASCII: mutt enabled UTF8=ACCEPT, and
	// names it in UTF-8.
	mark = len(proxy.lines())
	tm.keys("c")
	tm.waitFor("Open mailbox")
	tm.keys("C-u", "=Grüße", "Enter")
	answered("opening Grüße", mark, `^\S+ SELECT "Grüße"$`)
	tm.waitFor("=Grüße [Msgs:1")
	tm.waitFor("Lunch on Friday")
	mark = len(proxy.lines())
	tm.keys("q")
	answered("leaving", mark, `^\S+ LOGOUT$`)
	checkConversation(t, proxy.lines())
}
