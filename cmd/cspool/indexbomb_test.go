package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/statuspage"
)

// indexBomb is a message made to make the search index expensive, as
// anyone may mail it: each is delivered alone, and its subject and a
// text it holds are then searched for. marker is a text of its body
// (BODY), or "" when its body has none to find; header, when set, a
// field and a text of its value (HEADER).
type indexBomb struct {
	name, subject, msg, marker string
	header                     [2]string
}

func indexBombs() []indexBomb {
	head := func(subject, rest string) string {
		return "From: stranger@example.net\r\nTo: alice@example.org\r\nSubject: " + subject + "\r\n" + rest
	}
	// tokens writes distinct short tokens (k0 k1 ... in hex) until b
	// holds n bytes, 16 a line.
	tokens := func(b *strings.Builder, from, n int) int {
		// strconv, not fmt: millions of tokens, made at a tenth of
		// the cost under the race detector.
		i := from
		var tok []byte
		for b.Len() < n {
			tok = strconv.AppendInt(append(tok[:0], 'k'), int64(i), 16)
			if i++; i%16 == 0 {
				tok = append(tok, '\r', '\n')
			} else {
				tok = append(tok, ' ')
			}
			b.Write(tok)
		}
		return i
	}
	var out []indexBomb
	add := func(name, msg, marker string) {
		subject, _, _ := strings.Cut(strings.SplitN(msg, "\r\nSubject: ", 2)[1], "\r\n")
		out = append(out, indexBomb{name: name, subject: subject, msg: msg, marker: marker})
	}

	// Just under what the index takes for one body: about 120,000
	// distinct words, every one a row of the vocabulary.
	var b strings.Builder
	b.WriteString(head("bomb-words-indexed", "\r\n"))
	tokens(&b, 0, 900<<10)
	add("distinct words the index takes", b.String(), " k1f3a9 ")

	// Millions of distinct short tokens, in the body and in a header
	// field of 3 MB (within mimeform.MaxHeaderBytes).
	b.Reset()
	b.WriteString("From: stranger@example.net\r\nTo: alice@example.org\r\nSubject: bomb-words-many\r\nX-Tokens:")
	var f strings.Builder
	tokens(&f, 1<<28, 3<<20)
	b.WriteString(strings.ReplaceAll(f.String(), "\r\n", "\r\n "))
	b.WriteString("\r\n\r\n")
	tokens(&b, 0, 44<<20)
	add("millions of distinct tokens", b.String(), " k100001 ")

	// A base64 text part that decodes to 34 MB of text.
	b.Reset()
	b.WriteString(head("bomb-base64", "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"))
	var text strings.Builder
	text.WriteString("the first line of the decoded text\r\n")
	tokens(&text, 1<<20, 34<<20)
	enc := base64.StdEncoding.EncodeToString([]byte(text.String()))
	for len(enc) > 0 {
		n := min(76, len(enc))
		b.WriteString(enc[:n] + "\r\n")
		enc = enc[n:]
	}
	add("a base64 part of 34 MB of text", b.String(), "the first line of the decoded")

	// Multiparts nested 550,000 deep (40 MB), a text at the bottom.
	b.Reset()
	b.WriteString(head("bomb-nested", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"))
	const depth = 550000
	nestMultiparts(&b, depth)
	add("multiparts nested 550,000 deep", b.String(), "")

	// A charset name of 1 MB, and 900 parts with unknown charsets of 2 KB.
	b.Reset()
	long := strings.Repeat("x-unknown-", 100<<10)
	b.WriteString(head("bomb-charsets", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"))
	fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain; charset=\"%s\"\r\n\r\nthe part of the long charset\r\n", long)
	for i := range 900 {
		fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain; charset=x-%s-%d\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\npart %d caf=E9\r\n",
			strings.Repeat("q", 2<<10), i, i)
	}
	b.WriteString("--b--\r\n")
	add("charsets long and unknown", b.String(), "the part of the long charset")

	// A header of 2.7 MB in 4,000 fields of 8-bit Latin-1, each searched
	// as written and read as windows-1252 (mimeform.HeaderFieldTexts).
	b.Reset()
	b.WriteString(head("bomb-latin1-header", ""))
	latin := strings.Repeat("\xe9t\xe9 \xe0 Z\xfcrich ", 50)
	for i := range 4000 {
		fmt.Fprintf(&b, "X-Latin-%d: %s%d\r\n", i, latin, i)
	}
	b.WriteString("\r\nthe body of the 8-bit header\r\n")
	add("a header of 4,000 8-bit fields", b.String(), "the body of the 8-bit header")
	out[len(out)-1].header = [2]string{"X-Latin-3999", "été à Zürich 3999"}
	return out
}

// TestIndexBombs delivers each of indexBombs over LMTP to a real server,
// one at a time, and waits until the daemon has applied it and its search
// index holds it (the status report's count of messages not indexed is
// 0): SEARCH SUBJECT then finds it, and SEARCH BODY its text. The
// daemon's peak resident size while it took each is logged
// (docs/MAILSTORE.md, "Messages made to make indexing expensive"). The
// nested multiparts' parse cost the square of their boundaries: the
// daemon would have applied that message after hours, and the test
// failed when INBOX did not show it within a minute.
func TestIndexBombs(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary, delivers 130 MB of mail to it")
	}
	lmtpAddr, s, dial := startHostileRig(t)
	c := dial()
	defer c.Close()
	pid := s.daemon.cmd.Process.Pid
	for i, m := range indexBombs() {
		n := uint32(i + 1)
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Fatalf("resetting the daemon's peak resident size: %v", err)
		}
		rest := procStatusKiB(t, pid, "VmRSS")
		start := time.Now()
		lmtpDeliver(t, lmtpAddr, m.msg)
		awaitMessages(t, c, n)
		s.waitReport(t, "a search index holding every message", func(r *statuspage.Report) bool {
			return r.Search != nil && r.Search.Unindexed == 0
		})
		took := time.Since(start)
		t.Logf("%s (%d MB): applied and indexed in %v; daemon resident at %d MiB before, peak %d MiB",
			m.name, len(m.msg)>>20, took.Round(time.Millisecond), rest>>10, procStatusKiB(t, pid, "VmHWM")>>10)

		searchFinds(t, c, &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: m.subject}}}, n)
		if m.marker != "" {
			searchFinds(t, c, &imap.SearchCriteria{Body: []string{m.marker}}, n)
		}
		if m.header[0] != "" {
			searchFinds(t, c, &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: m.header[0], Value: m.header[1]}}}, n)
		}
	}
}

// searchFinds runs a UID SEARCH and fails unless it finds uid alone.
func searchFinds(t *testing.T, c *imapclient.Client, crit *imap.SearchCriteria, uid uint32) {
	t.Helper()
	data, err := c.UIDSearch(crit, nil).Wait()
	if err != nil {
		t.Fatalf("UID SEARCH %+v: %v", crit, err)
	}
	if got := data.AllUIDs(); len(got) != 1 || got[0] != imap.UID(uid) {
		t.Errorf("UID SEARCH %+v found %v, want UID %d", crit, got, uid)
	}
}

// nestMultiparts writes into b, after a header whose Content-Type is
// multipart/mixed with boundary b0, depth multiparts nested one in the
// other (boundaries b0 to b(depth-1)), a text at the bottom.
func nestMultiparts(b *strings.Builder, depth int) {
	for i := 1; i < depth; i++ {
		b.WriteString("--b" + strconv.Itoa(i-1) + "\r\nContent-Type: multipart/mixed; boundary=b" + strconv.Itoa(i) + "\r\n\r\n")
	}
	b.WriteString("--b" + strconv.Itoa(depth-1) + "\r\nContent-Type: text/plain\r\n\r\nat the very bottom\r\n")
	for i := depth - 1; i >= 0; i-- {
		b.WriteString("--b" + strconv.Itoa(i) + "--\r\n")
	}
}
