package imapd

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// movemailTool is GNU Mailutils' movemail (Debian's mailutils installs it
// as movemail.mailutils; /usr/bin/movemail may be Emacs's own, which has
// no IMAP).
const movemailTool = "movemail.mailutils"

// movemailMessages are the messages the movemail tests move: movemail
// writes each with a "From " line made of its ENVELOPE's sender and date,
// and stops at a message without them (messages["broken"]: "cannot append
// message 1: Requested item not found"), leaving every message on the
// server, whatever the server.
var movemailMessages = []string{messages["plain"], messages["multipart"], messages["latin1"], nestedMessage}

// TestRmail drives Emacs's Rmail in batch mode with the script
// testdata/rmail.el, through a proxy that records the IMAP conversation:
// Rmail gets new mail from an imap:// inbox with GNU Mailutils' movemail,
// which fetches every message and deletes and expunges it, and shows each
// (the multipart ones' quoted-printable parts decoded and their
// attachments named, the ISO-8859-1 one decoded).
// INBOX is left empty, a second fetch finds nothing, and the conversation
// holds no NO or BAD.
func TestRmail(t *testing.T) {
	t.Parallel()
	emacs := needTool(t, "emacs")
	movemail := needToolIn(t, movemailTool, "mailutils")
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for _, m := range movemailMessages {
		pos = r.Deliver([]byte(m))
	}
	d.synced(pos)
	proxy := newIMAPProxy(t, d.addr)
	dir := t.TempDir()
	out := runEmacs(t, emacs, "rmail.el", "HOME="+dir, "RMAILDIR="+dir, "RMAILMOVEMAIL="+movemail,
		"RMAILINBOX=imap://alice@"+proxy.addr+"/INBOX", "RMAILPASS="+testPassword)
	if inbox, _ := scanBox(t, d, "INBOX"); inbox != "" {
		t.Errorf("INBOX after Rmail got new mail: %s, want empty\n%s", inbox, out)
	}
	checkConversation(t, proxy.lines())
}

// TestMovemail runs GNU Mailutils' movemail as a user who keeps the mail
// on the server does (--preserve), from a nested folder whose name
// holds non-ASCII letters (in modified UTF-7 in the URL: movemail sends
// the URL's path as it is, and a UTF-8 one, as an atom, gets BAD),
// through a proxy that records the conversation:
// the mbox gets every message once, whole, and the folder keeps them.
// Then a run without --preserve gets them again and empties the folder.
// The server answers no command NO or BAD. (movemail's --uidl has nothing
// to go by with IMAP: it makes each message's UIDL from its header and the
// time of the run, so a run in a later second fetches everything again,
// whatever the server.)
func TestMovemail(t *testing.T) {
	t.Parallel()
	movemail := needToolIn(t, movemailTool, "mailutils")
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	const folder, wireName = "Archiv/Grüße", "Archiv/Gr&APwA3w-e"
	w.ok(`CREATE "` + wireName + `"`)
	for _, m := range movemailMessages {
		w.ok(fmt.Sprintf("APPEND %q {%d}\r\n%s", wireName, len(m), m))
	}
	before, _ := scanBox(t, d, folder)
	proxy := newIMAPProxy(t, d.addr)
	dir := t.TempDir()
	src := (&url.URL{Scheme: "imap", User: url.UserPassword("alice", testPassword), Host: proxy.addr, Path: "/" + wireName}).String()
	mbox := filepath.Join(dir, "mbox")
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, movemail, append(append([]string{"--no-config"}, args...), src, mbox)...)
		cmd.Env = append(os.Environ(), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("movemail %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("--preserve")
	checkMbox(t, mbox)
	if after, _ := scanBox(t, d, folder); after != before {
		t.Errorf("%s after movemail --preserve: %s, want it as it was: %s", folder, after, before)
	}
	if err := os.Remove(mbox); err != nil {
		t.Fatal(err)
	}
	run()
	checkMbox(t, mbox)
	if after, _ := scanBox(t, d, folder); after != "" {
		t.Errorf("%s after movemail: %s, want empty", folder, after)
	}
	checkConversation(t, proxy.lines())
}

// checkMbox checks that the mbox file holds each of movemailMessages
// once, whole: with LF line ends, after a "From " line, and with the
// fields movemail adds to the header (X-IMAPbase, X-UID, X-UIDL, Status)
// taken out.
func checkMbox(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range strings.Split("\n"+string(b), "\nFrom ")[1:] {
		_, m, _ = strings.Cut(m, "\n") // the rest of the "From " line
		head, body, _ := strings.Cut(m, "\n\n")
		var kept []string
		for _, l := range strings.Split(head, "\n") {
			if f, _, _ := strings.Cut(l, ":"); f != "X-IMAPbase" && f != "X-UID" && f != "X-UIDL" && f != "Status" {
				kept = append(kept, l)
			}
		}
		// Each message is followed by an empty line: the line ends at
		// the end are not compared.
		got = append(got, strings.Join(kept, "\n")+"\n\n"+strings.TrimRight(body, "\n"))
	}
	if len(got) != len(movemailMessages) {
		t.Fatalf("the mbox holds %d messages, want %d:\n%s", len(got), len(movemailMessages), b)
	}
	for i, m := range movemailMessages {
		if want := strings.TrimRight(strings.ReplaceAll(m, "\r\n", "\n"), "\n"); got[i] != want {
			t.Errorf("message %d in the mbox:\n%q\nwant\n%q", i+1, got[i], want)
		}
	}
}
