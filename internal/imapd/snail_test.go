package imapd

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// snailScript is what a person types at s-nail's prompt, read by s-nail
// in batch mode: the headers of INBOX, the multipart message shown (its
// quoted-printable part decoded, its attachment named), one message
// flagged, one copied to Archive and one deleted, the folders listed, and
// the folder with non-ASCII letters opened.
const snailScript = `headers
print 2
flag 1
copy 2 +Archive
delete 3
folders
folder +Grüße
headers
quit
`

// TestSNail drives s-nail (a mailx with IMAP, the mail command of Arch
// Linux and others) in batch mode, through a proxy that records its IMAP
// conversation, with snailScript: it shows the multipart message's text
// part decoded and names its attachment, lists the folders (Grüße
// decoded), and opens Grüße. s-nail pipelines its STOREs and the CLOSE
// that expunges. Another session then finds each change (the flag, the
// copy, the deletion; s-nail marks a message it deletes \Seen), and the
// conversation holds no NO or BAD.
func TestSNail(t *testing.T) {
	t.Parallel()
	snail := needTool(t, "s-nail")
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := loginWire(t, d.addr)
	w.ok(`CREATE "Gr&APwA3w-e"`)
	m := messages["plain"]
	w.ok(fmt.Sprintf("APPEND \"Gr&APwA3w-e\" {%d}\r\n%s", len(m), m))
	proxy := newIMAPProxy(t, d.addr)
	home := t.TempDir()
	folder := (&url.URL{Scheme: "imap", User: url.User("alice"), Host: proxy.addr}).String()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, snail, "-#", "-n", "-Sv15-compat", "-Sttycharset=utf-8", "-Smailcap-disable",
		"-Sfolder="+folder, "-Spassword="+testPassword, "-f", "+INBOX")
	cmd.Env = append(os.Environ(), "HOME="+home, "LC_ALL=C.UTF-8", "MAILRC=/dev/null")
	cmd.Stdin = strings.NewReader(snailScript)
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("s-nail: %v\n%s", err, out)
	}
	defer func() {
		if t.Failed() {
			t.Logf("s-nail:\n%s", out)
		}
	}()
	for _, want := range []string{"Lunch on Friday", "Voilà mon CV, café compris.", "cv.pdf", "Archive", "Grüße"} {
		if !strings.Contains(out, want) {
			t.Errorf("s-nail did not show %q:\n%s", want, out)
		}
	}
	if proxy.waitFor(0, 'C', regexp.MustCompile(`^\S+ SELECT "Gr&APwA3w-e"$`), 0) < 0 {
		t.Errorf("s-nail did not select Grüße as \"Gr&APwA3w-e\"")
	}
	if inbox, _ := scanBox(t, d, "INBOX"); inbox != `1[\Flagged] 2[\Seen] 4[]` {
		t.Errorf("INBOX after s-nail: %s, want 1[\\Flagged] 2[\\Seen] 4[]", inbox)
	}
	w.ok("SELECT Archive")
	u := w.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	if got := strings.Join(u, ""); len(u) != 1 || !strings.Contains(got, "R=C3=A9sum=C3=A9") {
		t.Errorf("Archive after s-nail copied message 2 there: %q", u)
	}
	checkConversation(t, proxy.lines())
}
