package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"cspool/internal/testproc"
)

// fetchBomb is a message made to make FETCH expensive, as anyone may mail
// it. Each of fetchBombItems is fetched from it, and its own items too;
// body is a text of BINARY[1] when set.
type fetchBomb struct {
	name, msg string
	items     []string
}

// fetchBombItems are fetched from every fetchBomb: the structure alone
// (the stored forms, written directly) and beside a section (go-imap
// writes it), its envelope, a part's MIME header and content, and a path
// 2,000 levels deep.
var fetchBombItems = []string{
	"BODYSTRUCTURE", "(BODYSTRUCTURE BODY.PEEK[HEADER])", "BODY", "ENVELOPE",
	"BODY.PEEK[1.MIME]", "BINARY.PEEK[1]", "BINARY.SIZE[1]",
	"BODY.PEEK[" + strings.TrimSuffix(strings.Repeat("1.", 2000), ".") + "]",
	"BINARY.PEEK[" + strings.TrimSuffix(strings.Repeat("1.", 2000), ".") + "]",
}

// maxStructureResponse bounds the answer to a FETCH of BODYSTRUCTURE,
// BODY or ENVELOPE of a fetchBomb: the parse keeps each within bounds
// (mimeform's MaxParts, MaxPartDepth, maxEnvelopeAddresses,
// maxNestedAddresses and maxLanguages), whatever the message's size.
const maxStructureResponse = 4 << 20

func fetchBombs(forwarded, siblings, languages int) []fetchBomb {
	head := func(subject, rest string) string {
		return "From: stranger@example.net\r\nTo: alice@example.org\r\nSubject: " + subject + "\r\n" + rest
	}
	var out []fetchBomb
	var b strings.Builder

	// Forwarded messages with 1,000 recipients in each of From, To, Cc
	// and Bcc, within MaxParts (each counts twice).
	var list strings.Builder
	for i := range 1000 {
		if i > 0 {
			list.WriteString(",")
		}
		fmt.Fprintf(&list, "xxxxxxxx%d@y", i)
	}
	b.WriteString(head("bomb-envelopes", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"))
	for i := range forwarded {
		fmt.Fprintf(&b, "--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: %[1]s\r\nTo: %[1]s\r\nCc: %[1]s\r\nBcc: %[1]s\r\nSubject: part %[2]d\r\n\r\ntext %[2]d\r\n", list.String(), i)
	}
	b.WriteString("--b--\r\n")
	out = append(out, fetchBomb{fmt.Sprintf("%d forwarded messages of 4,000 addresses", forwarded), b.String(),
		[]string{fmt.Sprintf("BODY.PEEK[%d.HEADER.FIELDS (SUBJECT)]", forwarded)}})

	// Parts whose Content-Language names a million tags (2 MB, within
	// the header bounds).
	b.Reset()
	b.WriteString(head("bomb-languages", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"))
	tags := strings.Repeat("e,", 1<<20) + "e"
	for i := range languages {
		fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain\r\nContent-Language: %s\r\n\r\npart %d\r\n", tags, i)
	}
	b.WriteString("--b--\r\n")
	out = append(out, fetchBomb{fmt.Sprintf("%d parts of a million language tags", languages), b.String(), nil})

	// Multiparts nested 10,000 deep.
	b.Reset()
	b.WriteString(head("bomb-nested", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"))
	const depth = 10000
	nestMultiparts(&b, depth)
	out = append(out, fetchBomb{"multiparts nested 10,000 deep", b.String(), nil})

	// Forwarded messages nested 1,000 deep.
	b.Reset()
	b.WriteString(head("bomb-forwarded", "MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"))
	for i := 1; i < 1000; i++ {
		fmt.Fprintf(&b, "Subject: level %d\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n", i)
	}
	b.WriteString("Subject: bottom\r\n\r\nat the bottom\r\n")
	out = append(out, fetchBomb{"messages nested 1,000 deep", b.String(), nil})

	// Sibling parts.
	b.Reset()
	b.WriteString(head("bomb-siblings", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"))
	for i := range siblings {
		fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n", i)
	}
	b.WriteString("--b--\r\n")
	out = append(out, fetchBomb{fmt.Sprintf("%d sibling parts", siblings), b.String(),
		[]string{fmt.Sprintf("BODY.PEEK[%d]", siblings), fmt.Sprintf("BODY.PEEK[%d.MIME]", siblings)}})

	// A boundary of 10 KB.
	bd := strings.Repeat("B", 10<<10)
	b.Reset()
	b.WriteString(head("bomb-boundary", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\""+bd+"\"\r\n\r\n"))
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--%s\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--%s--\r\n", bd, bd, bd)
	out = append(out, fetchBomb{"a boundary of 10 KB", b.String(), []string{"BODY.PEEK[2]", "BINARY.PEEK[2]"}})

	// Base64 broken in every way, quoted-printable with a stray "=".
	b.Reset()
	b.WriteString(head("bomb-encodings", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"))
	broken := []string{"aGVsbG8", "aGVsbG8=\r\n====", "a", "!!!!", "aGVs\x00bG8=", "aGVsbG8=aGVsbG8=", "=", strings.Repeat("A", 4<<20) + "!"}
	var items []string
	for i, s := range broken {
		fmt.Fprintf(&b, "--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n", s)
		items = append(items, fmt.Sprintf("BINARY.PEEK[%d]", i+1), fmt.Sprintf("BINARY.SIZE[%d]", i+1))
	}
	for i, s := range []string{"abc=", "=ZZ", "abc=\r\n="} {
		fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n", s)
		items = append(items, fmt.Sprintf("BINARY.PEEK[%d]", len(broken)+i+1))
	}
	b.WriteString("--b--\r\n")
	out = append(out, fetchBomb{"broken base64 and quoted-printable", b.String(), items})
	return out
}

// TestFetchBombs delivers each of fetchBombs over LMTP to a real server,
// and fetches from the daemon, over a socket, each of fetchBombItems and
// its own items, one command each: every one must be answered OK, and
// the connection kept; BODYSTRUCTURE, BODY and ENVELOPE within
// maxStructureResponse; BODY[] and BODY[TEXT] the delivered bytes. The
// daemon's peak resident size while it applied each and while it served
// its FETCHes is logged (docs/IMAP.md, "Messages made to make FETCH
// expensive"). The forwarded messages' envelopes were whole, two million
// addresses: a 27 MB message's BODYSTRUCTURE was 83 MB; the language
// tags too: 41 MB of them made a BODYSTRUCTURE of 82 MB.
func TestFetchBombs(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary, delivers 80 MB of mail to it")
	}
	forwarded := testproc.Scale(t, 60, 495)
	siblings := testproc.Scale(t, 20000, 200000)
	languages := testproc.Scale(t, 4, 20)
	lmtpAddr, s, dial := startHostileRig(t)
	c := dial()
	defer c.Close()
	pid := s.daemon.cmd.Process.Pid
	clearPeak := func() {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Fatalf("resetting the daemon's peak resident size: %v", err)
		}
	}
	conn := dialRawIMAP(t, fmt.Sprintf("127.0.0.1:%d", s.imapPort), s.user, s.password)
	for i, m := range fetchBombs(forwarded, siblings, languages) {
		uid := i + 1
		clearPeak()
		lmtpDeliver(t, lmtpAddr, m.msg)
		awaitMessages(t, c, uint32(uid))
		applied := procStatusKiB(t, pid, "VmHWM")
		conn.command(t, "NOOP") // the new message in its view
		clearPeak()
		var largest int
		for _, item := range append(append([]string{}, fetchBombItems...), m.items...) {
			got := conn.command(t, fmt.Sprintf("UID FETCH %d %s", uid, item))
			if !bytes.Contains(got, []byte(fmt.Sprintf(" FETCH (UID %d ", uid))) {
				t.Errorf("%s: FETCH %s: no FETCH response in %q", m.name, item, got[:min(len(got), 200)])
			}
			if strings.Contains(item, "BODYSTRUCTURE") || item == "BODY" || item == "ENVELOPE" {
				if len(got) > maxStructureResponse {
					t.Errorf("%s: FETCH %s: %d bytes, want at most %d", m.name, item, len(got), maxStructureResponse)
				}
			}
			largest = max(largest, len(got))
		}
		whole := conn.command(t, fmt.Sprintf("UID FETCH %d BODY.PEEK[]", uid))
		if !bytes.Contains(whole, []byte(m.msg)) {
			t.Errorf("%s: BODY[] (%d bytes) does not hold the %d bytes delivered", m.name, len(whole), len(m.msg))
		}
		_, body, _ := strings.Cut(m.msg, "\r\n\r\n")
		text := conn.command(t, fmt.Sprintf("UID FETCH %d BODY.PEEK[TEXT]", uid))
		if !bytes.Contains(text, []byte(fmt.Sprintf("{%d}\r\n%s)", len(body), body))) {
			t.Errorf("%s: BODY[TEXT] (%d bytes) is not the %d bytes of the body delivered", m.name, len(text), len(body))
		}
		t.Logf("%s (%d KB): daemon peak %d MiB applying it, %d MiB serving FETCH; largest answer but BODY[] %d KB",
			m.name, len(m.msg)>>10, applied>>10, procStatusKiB(t, pid, "VmHWM")>>10, largest>>10)
	}
}

// rawIMAP is an IMAP connection driven line by line, which reads an
// answer whole, literals included, without parsing it.
type rawIMAP struct {
	conn net.Conn
	r    *bufio.Reader
	tag  int
}

// dialRawIMAP connects to addr and logs in, and selects INBOX.
func dialRawIMAP(t *testing.T, addr, user, password string) *rawIMAP {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	x := &rawIMAP{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := x.r.ReadString('\n'); err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	x.command(t, fmt.Sprintf("LOGIN %s %s", user, password))
	x.command(t, "SELECT INBOX")
	return x
}

// command sends cmd and returns its answer, the tagged line included; it
// fails the test unless the answer is OK within 2 minutes.
func (x *rawIMAP) command(t *testing.T, cmd string) []byte {
	t.Helper()
	x.tag++
	tag := fmt.Sprintf("x%d ", x.tag)
	name := cmd[:min(len(cmd), 80)]
	x.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := fmt.Fprintf(x.conn, "%s%s\r\n", tag, cmd); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var out []byte
	for {
		line, err := x.r.ReadBytes('\n')
		out = append(out, line...)
		if err != nil {
			t.Fatalf("%s: the connection ended after %d bytes: %v", name, len(out), err)
		}
		if bytes.HasPrefix(line, []byte(tag)) {
			if !bytes.HasPrefix(line, []byte(tag+"OK")) {
				t.Fatalf("%s: %q", name, line)
			}
			return out
		}
		l := bytes.TrimRight(line, "\r\n")
		if i := bytes.LastIndexByte(l, '{'); i >= 0 && bytes.HasSuffix(l, []byte("}")) {
			n, err := strconv.Atoi(strings.TrimSuffix(string(l[i+1:len(l)-1]), "+"))
			if err != nil {
				t.Fatalf("%s: a literal's length in %q", name, l)
			}
			lit := make([]byte, n)
			if _, err := io.ReadFull(x.r, lit); err != nil {
				t.Fatalf("%s: reading a literal of %d bytes: %v", name, n, err)
			}
			out = append(out, lit...)
		}
	}
}
