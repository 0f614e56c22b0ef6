package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// TestParameterBombServed: a message whose parts' Content-Types hold
// 150,000 RFC 2231 continuations each (3.5 MB a header, within
// mimeform.MaxHeaderBytes), as anyone may mail, is delivered over LMTP to
// a real server with an ordinary message, and the daemon syncs both. The
// parse keeps its bounds (mimeform.MaxFieldSemicolons): the message is
// served as one text part (BODYSTRUCTURE), its bytes are given back by
// BODY[] as delivered, SEARCH BODY finds a text of its second part, and a
// STORE on the other message is answered. Before, the daemon parsed every
// continuation into a map each time it read such a header (the parse, the
// search index, each FETCH of a part): the structure listed the parts with
// a name of 900 KB each, the parse of one such header allocated 195 MB,
// and a STORE made while the search index took a message of nine such
// parts waited 19 s.
func TestParameterBombServed(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	lmtpAddr, s, dial := startHostileRig(t)
	var segs strings.Builder
	for i := range 150000 {
		fmt.Fprintf(&segs, ";\r\n name*%d=\"s%d\"", i, i)
	}
	var msg strings.Builder
	msg.WriteString("From: stranger@example.net\r\nTo: alice@example.org\r\nSubject: parameters\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n")
	for i := range 3 {
		fmt.Fprintf(&msg, "--b\r\nContent-Type: application/octet-stream%s\r\n\r\npart %d\r\n", segs.String(), i)
	}
	msg.WriteString("--b\r\nContent-Type: text/plain\r\n\r\nthe last part\r\n--b--\r\n")
	bomb := msg.String()
	lmtpDeliver(t, lmtpAddr, "From: friend@example.net\r\nTo: alice@example.org\r\nSubject: ordinary\r\n\r\nhello\r\n")
	lmtpDeliver(t, lmtpAddr, bomb)

	c := dial()
	defer c.Close()
	awaitMessages(t, c, 2)
	whole := &imap.FetchItemBodySection{Peek: true}
	got, err := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection: []*imap.FetchItemBodySection{whole}}).Collect()
	if err != nil || len(got) != 1 {
		t.Fatalf("FETCH BODYSTRUCTURE BODY.PEEK[]: %d messages, %v", len(got), err)
	}
	if body := got[0].FindBodySection(whole); !bytes.HasSuffix(body, []byte(bomb)) {
		t.Errorf("BODY[] is %d bytes and does not end with the %d bytes delivered", len(body), len(bomb))
	}
	sp, ok := got[0].BodyStructure.(*imap.BodyStructureSinglePart)
	if !ok || sp.Type != "text" || sp.Subtype != "plain" {
		t.Errorf("BODYSTRUCTURE %#v, want one text/plain part: the message is beyond the parse's bounds", got[0].BodyStructure)
	}
	// The search index takes the message after it is applied: its text
	// is found once indexed, or by the scan until then.
	for i := 0; ; i++ {
		found, err := c.UIDSearch(&imap.SearchCriteria{Body: []string{"the last part"}}, nil).Wait()
		if err != nil {
			t.Fatalf("SEARCH BODY: %v", err)
		}
		if uids := found.AllUIDs(); len(uids) == 1 && uids[0] == 2 {
			break
		}
		if i == 100 {
			t.Fatalf("SEARCH BODY \"the last part\" found %v, want UID 2", found.AllUIDs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatalf("STORE on the other message: %v", err)
	}
	t.Logf("daemon's peak resident size %d MiB", procStatusKiB(t, s.daemon.cmd.Process.Pid, "VmHWM")>>10)
}
