package submit_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	_ "modernc.org/sqlite"

	"cspool/internal/devicetest"
	"cspool/internal/loginguard"
	"cspool/internal/mimeform"
	"cspool/internal/outbox"
	"cspool/internal/sendtest"
	"cspool/internal/smtpdata/smtpdatatest"
	"cspool/internal/submit"
	"cspool/internal/syncer"
)

const (
	user     = "alice"
	password = "correct horse battery staple"
	wait     = 30 * time.Second
)

// rig is a device with its outbox, a smarthost and the submission
// listener on a loopback port.
type rig struct {
	t    *testing.T
	dev  *devicetest.Device
	host *sendtest.Smarthost
	box  *outbox.Outbox
	addr string
	dir  string
	// waits are the delays the login guard asked for, not waited.
	mu    sync.Mutex
	waits []time.Duration
}

func (r *rig) wait(_ context.Context, d time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits = append(r.waits, d)
	return nil
}

func newRig(t *testing.T, maxBytes int64) *rig {
	t.Helper()
	return newRigWith(t, maxBytes, sendtest.SmarthostOptions{})
}

func newRigWith(t *testing.T, maxBytes int64, opts sendtest.SmarthostOptions) *rig {
	t.Helper()
	return newRigLimits(t, maxBytes, opts, loginguard.Limits{})
}

// newRigLimits is newRigWith with the login guard's limits lim, whose
// waits the rig records instead.
func newRigLimits(t *testing.T, maxBytes int64, opts sendtest.SmarthostOptions, lim loginguard.Limits) *rig {
	t.Helper()
	r := &rig{t: t, dev: devicetest.NewSpool(t).Running("device", syncer.Config{Wait: 200 * time.Millisecond}), dir: t.TempDir()}
	ca := sendtest.NewCA(t, r.dir)
	r.host = sendtest.NewSmarthost(t, ca, opts)
	lim.Wait = r.wait
	var err error
	r.box, err = outbox.Open(outbox.Config{Path: r.dev.Store.Path() + ".outbox", Store: r.dev.Store, Log: r.dev.Sync,
		Relay: outbox.Relay{Addr: r.host.Addr, RootCAs: ca.Pool}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.box.Run(ctx) }()
	srv, err := submit.New(submit.Config{User: user, Password: password, Identities: []string{"alice@example.org", "Alice.Work@Example.COM"},
		Queue: r.box, Hostname: "device.test", MaxMessageBytes: maxBytes, Logger: slog.New(slog.DiscardHandler),
		Login: lim})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		r.box.Close()
	})
	return r
}

// python runs the smtplib client script with a scenario and returns its
// output lines.
func (r *rig) python(pw, scenario string, args ...string) []string {
	r.t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			r.t.Fatal("python3 is required in CI")
		}
		r.t.Skip("python3 not installed")
	}
	host, port, _ := net.SplitHostPort(r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, append([]string{"testdata/smtplib_client.py", host, port, user, pw, scenario}, args...)...).CombinedOutput()
	if err != nil {
		r.t.Fatalf("smtplib %s: %v\n%s", scenario, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func (r *rig) file(name, content string) string {
	r.t.Helper()
	p := filepath.Join(r.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// TestEHLO: the extensions a mail client looks for.
func TestEHLO(t *testing.T) {
	r := newRig(t, 0)
	got := r.python(password, "ehlo")[0]
	for _, ext := range []string{"8bitmime", "auth", "dsn", "enhancedstatuscodes", "pipelining", "size", "smtputf8"} {
		if !slices.Contains(strings.Fields(got), ext) {
			t.Errorf("EHLO lacks %s: %s", ext, got)
		}
	}
}

// TestSubmitWithSmtplib: a message with Bcc, 8-bit UTF-8 and no Message-ID
// or Date goes in with smtplib; the smarthost gets it without the Bcc field
// and with the added fields, Sent keeps the whole of it.
func TestSubmitWithSmtplib(t *testing.T) {
	r := newRig(t, 0)
	msg := "From: Alice <Alice.Work@example.com>\r\nTo: bob@example.net\r\nBcc: carol@example.com\r\n" +
		"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n.leading dot\r\n"
	path := r.file("msg.eml", msg)
	if out := r.python(password, "send", "alice.work@example.com", path, "bob@example.net", "carol@example.com"); out[0] != "SENT 0" {
		t.Fatalf("smtplib: %v", out)
	}
	got := r.host.Wait(t, 1, wait)[0]
	if got.From != "alice.work@example.com" || !slices.Equal(got.To, []string{"bob@example.net", "carol@example.com"}) {
		t.Errorf("envelope %s %v", got.From, got.To)
	}
	head, body, _ := bytes.Cut(got.Data, []byte("\r\n\r\n"))
	if bytes.Contains(head, []byte("Bcc:")) || !bytes.Contains(head, []byte("\r\nMessage-ID: <")) && !bytes.HasPrefix(head, []byte("Message-ID: <")) ||
		!bytes.Contains(head, []byte("Date: ")) {
		t.Errorf("relayed header:\n%s", head)
	}
	if string(body) != "Gr\xc3\xbc\xc3\x9fe\r\n.leading dot\r\n" {
		t.Errorf("relayed body %q", body)
	}
	sent := devicetest.WaitMessages(t, r.dev.Store, "Sent", 1, wait)
	if !bytes.HasSuffix(sent[0].Raw, []byte(msg)) || !bytes.Contains(sent[0].Raw, []byte("Bcc: carol@example.com")) {
		t.Errorf("Sent copy %q does not end with the message as submitted", sent[0].Raw)
	}
	if id := submit.MessageID(got.Data); id == "" || sent[0].Envelope.MessageID != id {
		t.Errorf("Message-ID relayed %q, in Sent %q", id, sent[0].Envelope.MessageID)
	}
	// The Message-ID and Date the listener added are the same in both:
	// what was relayed is the Sent copy less its Bcc field.
	if !bytes.Equal(submit.StripBcc(sent[0].Raw), got.Data) {
		t.Errorf("relayed %q, Sent copy %q: want the copy less its Bcc field", got.Data, sent[0].Raw)
	}
}

// TestResentByTheUser: a message the user sends on again, with a resent
// block of her own (Resent-From one of her identities, RFC 5322 section
// 3.6.6), is accepted and relayed as it is.
func TestResentByTheUser(t *testing.T) {
	r := newRig(t, 0)
	msg := "Resent-From: Alice <Alice.Work@example.com>\r\nResent-Sender: alice@example.org\r\nResent-Date: Wed, 2 Dec 2026 06:30:00 +0000\r\n" +
		"Resent-To: carol@example.com\r\nResent-Message-ID: <again@example.org>\r\n" +
		"From: alice@example.org\r\nTo: bob@example.net\r\nDate: Tue, 1 Dec 2026 06:30:00 +0000\r\nMessage-ID: <first@example.org>\r\n\r\nhi\r\n"
	if out := r.python(password, "send", "alice@example.org", r.file("resent.eml", msg), "carol@example.com"); out[0] != "SENT 0" {
		t.Fatalf("smtplib: %v", out)
	}
	if got := r.host.Wait(t, 1, wait)[0]; string(got.Data) != msg {
		t.Errorf("relayed %q, want the message as submitted %q", got.Data, msg)
	}
}

// TestAuthLOGIN: the LOGIN mechanism works too.
func TestAuthLOGIN(t *testing.T) {
	r := newRig(t, 0)
	if got := r.python(password, "auth-login")[0]; !strings.HasPrefix(got, "235 ") {
		t.Errorf("AUTH LOGIN: %q, want 235", got)
	}
	if got := r.python("wrong", "auth-login")[0]; !strings.HasPrefix(got, "535 ") {
		t.Errorf("AUTH LOGIN with a wrong password: %q, want 535", got)
	}
}

// TestRefusals: what is refused, with which reply; nothing is queued.
func TestRefusals(t *testing.T) {
	r := newRig(t, 4096)
	good := "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nhi\r\n"
	cases := []struct {
		name, scenario, sender, msg string
		want                        []string
	}{
		{"before AUTH", "before-auth", "", "", []string{"MAIL 530 "}},
		{"envelope sender not an identity", "refused", "mallory@example.org", good,
			[]string{"MAIL 553 5.7.1 ", "RCPT 502 ", "DATA 502 "}},
		{"From not an identity", "refused", "alice@example.org",
			"From: Boss <boss@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"one of two From addresses not an identity", "refused", "alice@example.org",
			"From: alice@example.org, boss@example.org\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		// Lower-cased by strings.ToLower, U+0130 (a capital I with a dot)
		// is i: the look-alike passed for alice's address.
		{"From a look-alike of an identity", "refused", "alice@example.org",
			"From: al\u0130ce@example.org\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"Sender not an identity", "refused", "alice@example.org",
			"From: alice@example.org\r\nSender: boss@example.org\r\n\r\nx\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		// A second From (or Sender) field, which the check read past and
		// many readers show: RFC 5322 section 3.6 allows one.
		{"a second From field", "refused", "alice@example.org",
			"From: alice@example.org\r\nfrom: boss@example.org\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a second From field, bare LF", "refused", "alice@example.org",
			"From: alice@example.org\nFrom: boss@example.org\nTo: bob@example.net\n\npay\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		// A bare CR in the header: the checks read "X-A: b\rFrom: boss"
		// as one field X-A, a reader ending lines at the CR sees a From.
		{"a From field after a bare CR", "refused", "alice@example.org",
			"X-A: b\rFrom: boss@example.org\r\nFrom: alice@example.org\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a header ending in a bare CR", "refused", "alice@example.org",
			"From: alice@example.org\r\nTo: bob@example.net\r\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a second Sender field", "refused", "alice@example.org",
			"From: alice@example.org\r\nSender: alice@example.org\r\nSender: boss@example.org\r\n\r\nx\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"no From", "refused", "alice@example.org", "To: bob@example.net\r\n\r\nx\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		// Resent fields (RFC 5322 section 3.6.6): the newest block's
		// Resent-From is who a reader shows as having sent the message on;
		// it and every other Resent-From and Resent-Sender were passed
		// unchecked.
		{"Resent-From not an identity", "refused", "alice@example.org",
			"Resent-From: The Boss <boss@example.org>\r\nResent-Date: Wed, 2 Dec 2026 06:30:00 +0000\r\nResent-To: bob@example.net\r\n" +
				"From: alice@example.org\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"Resent-Sender not an identity", "refused", "alice@example.org",
			"Resent-From: alice@example.org\r\nResent-Sender: boss@example.org\r\nResent-Date: Wed, 2 Dec 2026 06:30:00 +0000\r\n" +
				"From: alice@example.org\r\n\r\nx\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"Resent-From of an older block not an identity", "refused", "alice@example.org",
			"Resent-From: alice@example.org\r\nResent-Date: Wed, 2 Dec 2026 06:30:00 +0000\r\nReceived: from x by y; Wed, 2 Dec 2026 06:00:00 +0000\r\n" +
				"resent-from: boss@example.org\r\nResent-Date: Tue, 1 Dec 2026 06:30:00 +0000\r\nFrom: alice@example.org\r\n\r\nx\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"two Resent-From fields in the newest block", "refused", "alice@example.org",
			"Resent-From: alice@example.org\r\nResent-From: alice@example.org\r\nResent-Date: Wed, 2 Dec 2026 06:30:00 +0000\r\n" +
				"From: alice@example.org\r\n\r\nx\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a newest resent block without Resent-From", "refused", "alice@example.org",
			"Resent-To: bob@example.net\r\nResent-Date: Wed, 2 Dec 2026 06:30:00 +0000\r\nReceived: from x by y; Wed, 2 Dec 2026 06:00:00 +0000\r\n" +
				"Resent-From: alice@example.org\r\nResent-Date: Tue, 1 Dec 2026 06:30:00 +0000\r\nFrom: alice@example.org\r\n\r\nx\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		// Author (RFC 9057) names the message's author, and readers that
		// know it show it in From's place: it was not checked.
		{"Author not an identity", "refused", "alice@example.org",
			"Author: The Boss <boss@example.org>\r\nFrom: alice@example.org\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 the Author address <boss@example.org> is not one of your identities"}},
		{"an Author display name that is another address", "refused", "alice@example.org",
			"From: alice@example.org\r\nauthor: \"boss@example.org\" <alice@example.org>\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"a second Author field", "refused", "alice@example.org",
			"From: alice@example.org\r\nAuthor: alice@example.org\r\nAUTHOR: boss@example.org\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"an Author group", "refused", "alice@example.org",
			"From: alice@example.org\r\nAuthor: Boss: alice@example.org;\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		// An address outside the address itself: in a display name, a
		// comment or an encoded word, which readers show as the author
		// (Python's email reads each of these as the name
		// "boss@example.org"), or a group, whose name net/mail drops. All
		// were relayed, through Postfix as they came.
		{"a display name that is another address", "refused", "alice@example.org",
			"From: \"boss@example.org\" <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 the From header field names <boss@example.org> outside its address"}},
		{"a comment that is another address", "refused", "alice@example.org",
			"From: alice@example.org (boss@example.org)\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"a comment after the angle address", "refused", "alice@example.org",
			"From: <alice@example.org> (boss@example.org)\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"an encoded word that decodes to another address", "refused", "alice@example.org",
			"From: =?utf-8?q?=3Cboss=40example=2Eorg=3E?= <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 the From header field names <boss@example.org> "}},
		{"a base64 encoded word in a quoted string", "refused", "alice@example.org",
			"From: \"=?utf-8?b?Ym9zc0BleGFtcGxlLm9yZw==?=\" <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		// A look-alike of an "@" (U+FF20, U+FE6B: NFKC maps each to
		// one) was no "@" to the check, and the name, which readers show
		// as an address, was relayed.
		{"a display name with a full-width at", "refused", "alice@example.org",
			"From: \"boss\uff20example.org\" <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 the From header field names <boss@example.org> outside its address"}},
		{"a comment with a small commercial at", "refused", "alice@example.org",
			"From: alice@example.org (boss\ufe6bexample.org)\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"an encoded word with a full-width at", "refused", "alice@example.org",
			"From: =?utf-8?q?boss=EF=BC=A0example=2Eorg?= <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 the From header field names <boss@example.org> "}},
		// Bytes that are not UTF-8 in a comment (net/mail refuses them
		// in a display name): GBK and EUC-KR readers show A3 C0 as a
		// full-width "@" (Shift_JIS ones 81 97), the device as two
		// windows-1252 letters, and the check saw no "@".
		{"a comment in GBK with a full-width at", "refused", "alice@example.org",
			"From: alice@example.org (boss\xa3\xc0example.org)\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 The From header field has bytes that are not UTF-8"}},
		{"a comment in Shift_JIS with a full-width at", "refused", "alice@example.org",
			"From: <alice@example.org> (boss\x81\x97example.org)\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"an encoded word labelled UTF-8 holding GBK", "refused", "alice@example.org",
			"From: =?utf-8?q?boss=A3=C0example=2Eorg?= <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 The From header field has an encoded word (RFC 2047) whose text is not UTF-8"}},
		// An encoded word that does not decode here was left as it
		// was, and Python's email decodes these leniently (no padding, a
		// blank inside) as the name "boss@example.org".
		{"a base64 encoded word without its padding", "refused", "alice@example.org",
			"From: =?utf-8?b?Ym9zc0BleGFtcGxlLm9yZw?= <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 The From header field has an encoded word (RFC 2047) that does not decode here"}},
		{"a base64 encoded word with a blank inside", "refused", "alice@example.org",
			"From: =?utf-8?b?Ym9z c0BleGFtcGxlLm9yZw==?= <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 The From header field has an encoded word (RFC 2047) that does not decode here"}},
		{"a base64 encoded word folded inside", "refused", "alice@example.org",
			"From: =?utf-8?b?Ym9zc0Bl\r\n eGFtcGxlLm9yZw==?= <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 The From header field has an encoded word (RFC 2047) that does not decode here"}},
		// net/mail dropped the second word and read the name "ok".
		{"an encoded word in a charset not known", "refused", "alice@example.org",
			"From: =?utf-8?q?ok?= =?x-unknown?q?boss=40example=2Eorg?= <alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 The From header field has an encoded word (RFC 2047) in a charset not known here"}},
		{"a Sender display name that is another address", "refused", "alice@example.org",
			"From: alice@example.org\r\nSender: \"boss@example.org\" <alice@example.org>\r\n\r\nx\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"a folded From whose comment is another address", "refused", "alice@example.org",
			"From: alice@example.org\r\n (boss@example.org)\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"a group named as another address", "refused", "alice@example.org",
			"From: \"boss@example.org\": alice@example.org;\r\nTo: bob@example.net\r\n\r\npay\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 The From header field holds a group"}},
		{"a group of identities", "refused", "alice@example.org",
			"From: Friends: alice@example.org;\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a route address", "refused", "alice@example.org",
			"From: <@relay.example.net:alice@example.org>\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		// Blanks before a field's colon (RFC 5322 section 4.5): read as
		// the field by the checks; Postfix took a first line "From :" for
		// a mailbox separator, and Python's email ends the header at
		// such a line. A name with another byte than those of a field
		// name makes the header not parse.
		{"a From field with a blank before the colon", "refused", "alice@example.org",
			"From : alice@example.org\r\nTo: bob@example.net\r\n\r\nhi\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", `DATA 554 5.6.0 Line 1 of the message header has blanks between the field name "From" and its colon`}},
		{"a field with a tab before the colon", "refused", "alice@example.org",
			"From: alice@example.org\r\nSubject\t: hi\r\nTo: bob@example.net\r\n\r\nhi\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 Line 2 "}},
		{"a vertical tab before the colon", "refused", "alice@example.org",
			"From: alice@example.org\r\nFrom\v: boss@example.org\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		// A line of blanks continues the field before it: what follows is
		// header still, and so is all of a message without an empty line.
		{"a From field after a line of blanks", "refused", "alice@example.org",
			"From: alice@example.org\r\nX-A: a\r\n \r\nFrom: boss@example.org\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a From field after a line of blanks, alone", "refused", "alice@example.org",
			"X-A: a\r\n\t\r\nFrom: boss@example.org\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 553 5.7.1 "}},
		{"a second From field in a message without a body", "refused", "alice@example.org",
			"From: alice@example.org\r\nTo: bob@example.net\r\nFrom: boss@example.org\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a Resent-From of no address", "refused", "alice@example.org",
			"Resent-From: undisclosed:;\r\nResent-Date: Wed, 2 Dec 2026 06:30:00 +0000\r\nFrom: alice@example.org\r\n\r\nx\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		// A bare CR or LF in the body (RFC 5321 section 2.3.8): relayed as
		// it was, "\r.\r\n" ends the data for a next hop that takes a bare
		// CR for a line end, and what follows is read as its commands
		// (SMTP smuggling): here a second message from the boss.
		{"a smuggled message after a bare CR", "refused", "alice@example.org",
			"From: alice@example.org\r\nTo: bob@example.net\r\n\r\nhi\r.\r\nMAIL FROM:<boss@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n" +
				"From: boss@example.org\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a smuggled message after a bare LF", "refused", "alice@example.org",
			"From: alice@example.org\r\nTo: bob@example.net\r\n\r\nhi\n.\nMAIL FROM:<boss@example.org>\nRCPT TO:<bob@example.net>\nDATA\n" +
				"From: boss@example.org\n\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a bare CR inside a body line", "refused", "alice@example.org",
			"From: alice@example.org\r\nTo: bob@example.net\r\n\r\nline one\rline two\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a body line ending in a bare LF", "refused", "alice@example.org",
			"From: alice@example.org\r\nTo: bob@example.net\r\n\r\nline one\nline two\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a header with bare LF line ends", "refused", "alice@example.org",
			"From: alice@example.org\nTo: bob@example.net\n\nhi\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		// A NUL, which no message holds (RFC 5322 section 2.3, RFC
		// 6152): relayed as it came, to next hops that may end a line
		// or a text there.
		{"a NUL in the header", "refused", "alice@example.org",
			"From: alice@example.org\r\nSubject: a\x00b\r\nTo: bob@example.net\r\n\r\npay\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		{"a NUL in the body", "refused", "alice@example.org",
			"From: alice@example.org\r\nTo: bob@example.net\r\n\r\npay\x00\r\nmore\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 "}},
		// A line of over 998 bytes (RFC 5322 section 2.1.1): relayed as it
		// was, Postfix broke it in two with a CRLF and a space, and a
		// smarthost with a line limit refused it after the client's 250.
		{"a body line over 998 bytes", "refused", "alice@example.org",
			good + strings.Repeat("ten bytes.", 100) + "\r\n", []string{"MAIL 250 ", "RCPT 250 ", "DATA 554 5.6.0 The message has a line of 1000 bytes (line 2 of its body)"}},
		{"over the size limit", "oversize", "alice@example.org", good + strings.Repeat("x", 5000) + "\r\n",
			[]string{"MAIL 250 ", "RCPT 250 ", "DATA 552 5.3.4 ", "NOOP 250 "}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			if tc.sender != "" {
				args = []string{tc.sender, r.file("m.eml", tc.msg), "bob@example.net"}
			}
			got := r.python(password, tc.scenario, args...)
			if len(got) != len(tc.want) {
				t.Fatalf("replies %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("reply %d: %q, want %q...", i, got[i], tc.want[i])
				}
			}
		})
	}
	st, err := r.box.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Queued != 0 || len(r.host.Received()) != 0 {
		t.Errorf("refused messages were queued (%d) or relayed (%d)", st.Queued, len(r.host.Received()))
	}
}

// TestOriginatorFormsAccepted: the forms of an originator field that
// name only identities stay accepted, and are relayed as they came:
// another case in the field's name (Postfix reads it as From), a display
// name that is the address itself (as Outlook
// writes it), an encoded display name, a comment that names no address,
// an identity in another case, an Author that is an identity; and
// Reply-To and Disposition-Notification-To naming any address, since they
// say where answers go, not who wrote the message.
func TestOriginatorFormsAccepted(t *testing.T) {
	r := newRig(t, 0)
	forms := []string{
		"FROM: alice@example.org",
		"From: \"alice@example.org\" <alice@example.org>",
		"From: \"alice\uff20example.org\" <alice@example.org>",
		"From: =?utf-8?q?Al=C3=AFce_=3Calice=40example=2Eorg=3E?= <alice@example.org>",
		"From: alice@example.org (Alice at home)",
		"From: \"Alice (work)\" <ALICE.WORK@example.com>",
		"From: Alice <alice@example.org>, alice.work@example.com\r\nSender: alice@example.org",
		"From: alice@example.org\r\nAuthor: Alice <alice@example.org>",
		"From: alice@example.org\r\nReply-To: \"The Team\" <team@example.net>\r\nDisposition-Notification-To: boss@example.net",
	}
	for i, f := range forms {
		msg := fmt.Sprintf("%s\r\nTo: bob@example.net\r\nMessage-ID: <form-%d@example.org>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n", f, i)
		if got := r.python(password, "send", "alice@example.org", r.file("m.eml", msg), "bob@example.net"); len(got) != 1 || got[0] != "SENT 0" {
			t.Fatalf("%q: %q, want it sent", f, got)
		}
		if got := r.host.Wait(t, i+1, wait)[i]; string(got.Data) != msg {
			t.Errorf("relayed %q, want the message as submitted %q", got.Data, msg)
		}
	}
}

// TestHeaderBombRefused: a message whose header has more fields than the
// mail store parses (mimeform.MaxHeaderFields) is refused at DATA with
// what is wrong; the check parsed it whole first (a few hundred bytes a
// field, 910 MB for a header of 26 MB in a device daemon's apply) and
// took it, to be queued, relayed and filed in Sent.
func TestHeaderBombRefused(t *testing.T) {
	r := newRig(t, 8<<20)
	var b strings.Builder
	b.WriteString("From: alice@example.org\r\nTo: bob@example.net\r\n")
	for i := range mimeform.MaxHeaderFields {
		fmt.Fprintf(&b, "X-H%d: v\r\n", i)
	}
	b.WriteString("\r\nhi\r\n")
	got := r.python(password, "refused", "alice@example.org", r.file("m.eml", b.String()), "bob@example.net")
	if want := "DATA 554 5.6.0 The message header has over 5000 fields"; len(got) != 3 || !strings.HasPrefix(got[2], want) {
		t.Fatalf("replies %q, want %q", got, want)
	}
	if st, err := r.box.Status(context.Background()); err != nil || st.Queued != 0 || len(r.host.Received()) != 0 {
		t.Errorf("the message was queued (%+v, %v) or relayed (%d)", st, err, len(r.host.Received()))
	}
}

// TestWrongPasswordThrottled: failed logins are answered after the login
// guard's delay, doubling per failure as for IMAP, and the third closes
// the connection after its 535; the right password is not delayed.
func TestWrongPasswordThrottled(t *testing.T) {
	r := newRig(t, 0)
	got := r.python("not the password", "wrong-password")
	if want := []string{"535", "535", "535", "DISCONNECTED"}; !slices.Equal(got, want) {
		t.Errorf("logins: %v, want %v", got, want)
	}
	// The next connection from the same (loopback) source goes on doubling.
	if got := r.python("still not it", "auth-login")[0]; !strings.HasPrefix(got, "535 ") {
		t.Errorf("AUTH LOGIN with a wrong password: %q, want 535", got)
	}
	if got := r.python(password, "auth-login")[0]; !strings.HasPrefix(got, "235 ") {
		t.Errorf("the right password after the failures: %q", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}
	if !slices.Equal(r.waits, want) {
		t.Errorf("delays %v, want %v", r.waits, want)
	}
}

// TestGarbageLines: lines that are no command get 500 (or 501) and the
// connection stays usable.
func TestGarbageLines(t *testing.T) {
	r := newRig(t, 0)
	got := r.python(password, "garbage")
	if want := []string{"500", "500", "501", "NOOP 250 2.0.0 I have successfully done nothing"}; !slices.Equal(got, want) {
		t.Errorf("replies %v, want %v", got, want)
	}
}

// TestDataLineEnds sends every CR/LF shape of package smtpdata's table byte
// for byte over a socket (smtplib would normalise them): each gets its
// reply within seconds (go-smtp's own reader never sees the end of
// "\r\r\n.\r\n") and the connection stays in step. A shape whose message
// holds a bare CR or a bare LF gets 554 5.6.0 (RFC 5321 section 2.3.8;
// they were queued and relayed as they came, "\r.\r\n" included), and so
// do one with a line of over 998 bytes and one sent with BDAT; the others
// get 250 and the outbox keeps exactly the bytes of the table. The
// smarthost defers everything, so the messages stay in the outbox
// database, read here as docs/SENDING.md describes it.
func TestDataLineEnds(t *testing.T) {
	r := newRigWith(t, 0, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
	}})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	reply := func() string {
		t.Helper()
		// A missed end of data shows as no reply at all.
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		var last string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading a reply: %v (after %q)", err, last)
			}
			if last = l; len(l) < 4 || l[3] != '-' {
				return l
			}
		}
	}
	write := func(s string) {
		t.Helper()
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	reply()
	write("EHLO client.test\r\n")
	reply()
	write("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password)) + "\r\n")
	if got := reply(); !strings.HasPrefix(got, "235 ") {
		t.Fatalf("AUTH: %q", got)
	}
	cases := smtpdatatest.LineEndCases()
	var want [][]byte
	for i, tc := range cases {
		head := fmt.Sprintf("From: alice@example.org\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <shape-%d@example.org>\r\n\r\n", i)
		write("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
		for _, w := range []string{"250 ", "250 ", "354 "} {
			if got := reply(); !strings.HasPrefix(got, w) {
				t.Fatalf("%s: %q, want %s", tc.Name, got, w)
			}
		}
		write(head + tc.Wire + "NOOP\r\n")
		// Refused: a bare CR or LF, or a NUL (TestRefusals), or a line
		// of over 998 bytes (TestLongLineRefused).
		bare := hasBareLineEnd(tc.Want) || strings.Contains(tc.Want, "\x00") || hasLongLine(tc.Want)
		if got := reply(); bare && !strings.HasPrefix(got, "554 5.6.0 The message has a ") ||
			!bare && !strings.HasPrefix(got, "250 2.0.0 Queued as") {
			t.Fatalf("%s: reply to the end of the data %q, want %s", tc.Name, got, map[bool]string{true: "554 5.6.0", false: "250"}[bare])
		}
		if got := reply(); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("%s: NOOP after the message got %q (connection out of step)", tc.Name, got)
		}
		if !bare {
			want = append(want, []byte(head+tc.Want))
		}
	}
	// BDAT (CHUNKING, RFC 3030) carries no dot-stuffing, but the relay
	// sends with DATA: the same shapes are refused.
	msg := "From: alice@example.org\r\n\r\nhi\r.\r\nMAIL FROM:<boss@example.org>\r\n"
	write("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n" + fmt.Sprintf("BDAT %d LAST\r\n", len(msg)) + msg + "NOOP\r\n")
	for _, w := range []string{"250 ", "250 ", "554 5.6.0 ", "250 "} {
		if got := reply(); !strings.HasPrefix(got, w) {
			t.Fatalf("BDAT with a bare CR: %q, want %s", got, w)
		}
	}
	// A MAIL inside a transaction is refused (RFC 5321 section 4.1.4):
	// taken as a new one, it dropped bob, already answered 250.
	write("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nMAIL FROM:<alice@example.org>\r\nRSET\r\n")
	for _, w := range []string{"250 ", "250 ", "503 5.5.1 ", "250 "} {
		if got := reply(); !strings.HasPrefix(got, w) {
			t.Fatalf("a second MAIL without RSET: %q, want %s", got, w)
		}
	}
	db, err := sql.Open("sqlite", "file:"+r.dev.Store.Path()+".outbox"+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT data FROM messages ORDER BY qid")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for ; rows.Next(); i++ {
		var got []byte
		if err := rows.Scan(&got); err != nil {
			t.Fatal(err)
		}
		if i < len(want) && !bytes.Equal(got, want[i]) {
			t.Errorf("%s: stored %q, want %q", cases[i].Name, short(got), short(want[i]))
		}
	}
	if i != len(want) {
		t.Errorf("the outbox holds %d messages, want %d", i, len(want))
	}
}

// hasBareLineEnd reports whether s holds a CR no LF follows or an LF no CR
// precedes.
// hasLongLine reports whether s has a line of over submit.MaxLineBytes
// before its CRLF.
func hasLongLine(s string) bool {
	for _, l := range strings.Split(s, "\r\n") {
		if len(l) > submit.MaxLineBytes {
			return true
		}
	}
	return false
}

func hasBareLineEnd(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' && (i+1 == len(s) || s[i+1] != '\n') || s[i] == '\n' && (i == 0 || s[i-1] != '\r') {
			return true
		}
	}
	return false
}

func short(b []byte) string {
	if len(b) > 120 {
		return fmt.Sprintf("%q... (%d bytes)", b[:120], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// TestAuthPlainMalformed: an AUTH PLAIN message that is not authzid NUL
// authcid NUL passwd (RFC 4616 section 2), as the initial response or
// after the 334, is a syntax error: 501 5.5.2 (RFC 4954 section 4), the
// connection goes on and no failure is counted. go-smtp answered 454
// 4.7.0 "sasl: invalid response", a temporary failure a client tries
// again.
func TestAuthPlainMalformed(t *testing.T) {
	r := newRig(t, 0)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	reply := func() string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading a reply: %v", err)
			}
			if len(l) < 4 || l[3] != '-' {
				return l
			}
		}
	}
	send := func(s string, want string) {
		t.Helper()
		if _, err := io.WriteString(c, s+"\r\n"); err != nil {
			t.Fatal(err)
		}
		if got := reply(); !strings.HasPrefix(got, want) {
			t.Errorf("%q: got %q, want %s", s, got, want)
		}
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	reply()
	send("EHLO client.test", "250 ")
	for _, m := range []string{user + " " + password, "\x00" + user, "\x00" + user + "\x00" + password + "\x00"} {
		send("AUTH PLAIN "+b64(m), "501 5.5.2 ")
		send("NOOP", "250 ")
		send("AUTH PLAIN", "334 ")
		send(b64(m), "501 5.5.2 ")
		send("NOOP", "250 ")
	}
	send("AUTH PLAIN =", "501 5.5.2 ")
	send("AUTH PLAIN "+b64("\x00"+user+"\x00"+password), "235 ")
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waits) != 0 {
		t.Errorf("login guard delays %v, want none: no password was wrong", r.waits)
	}
}

// TestAuthNotBase64: an AUTH response that is not base64, as the initial
// response or after the 334, for PLAIN and LOGIN, gets 501 5.5.2 (RFC
// 4954 section 4: "If the server cannot BASE64 decode any client
// response, it MUST reject the AUTH command with a 501 error"), the
// connection goes on and no failure is counted. go-smtp answered 454
// 4.7.0 "Invalid base64 data", a temporary failure a client tries again.
func TestAuthNotBase64(t *testing.T) {
	r := newRig(t, 0)
	sc := dialSMTP(t, r.addr)
	sc.send("EHLO client.test", "250 ", "EHLO")
	for _, bad := range []string{"!!!!", "QUE", "AGFsaWNl=AA"} {
		for _, mech := range []string{"PLAIN", "LOGIN"} {
			sc.send("AUTH "+mech+" "+bad, "501 5.5.2 ", "an initial response not base64")
			sc.send("NOOP", "250 ", "after it")
			sc.send("AUTH "+mech, "334 ", "AUTH without an initial response")
			sc.send(bad, "501 5.5.2 ", "a response not base64 after the 334")
			sc.send("NOOP", "250 ", "after it")
		}
	}
	sc.send("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password)), "235 ", "the right login after them")
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waits) != 0 {
		t.Errorf("login guard delays %v, want none: no password was checked", r.waits)
	}
}

// refusingQueue takes no message; the tests using it send none.
type refusingQueue struct{}

func (refusingQueue) Enqueue(context.Context, *submit.Message) (string, error) {
	return "", fmt.Errorf("no queue here")
}

// TestServeAfterClose: a daemon stopped right after it started may close
// the server before the goroutine that serves its listener has run. That
// Serve returns nil at once with the listener closed, rather than wait in
// Accept for ever (and the daemon's stop with it). Round 0 closes before
// Serve is called; the others race the two.
func TestServeAfterClose(t *testing.T) {
	for i := range 50 {
		srv, err := submit.New(submit.Config{User: user, Password: password, Identities: []string{"alice@example.org"},
			Queue: refusingQueue{}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		if i == 0 {
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- srv.Serve(ln) }()
		} else {
			go func() { done <- srv.Serve(ln) }()
			srv.Close()
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("round %d: Serve returned %v, want nil", i, err)
			}
		case <-time.After(wait):
			ln.Close()
			t.Fatalf("round %d: Serve had not returned %v after Close", i, wait)
		}
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second); err == nil {
			c.Close()
			t.Errorf("round %d: the listener still accepts connections after Serve returned", i)
		}
		ln.Close()
	}
}

// TestEnvelopeAddressChecked: an envelope address the relay cannot pass on
// as it came is refused at its command. go-smtp's parser keeps a CR, a NUL
// or an ESC inside a domain or a quoted local part; a recipient holding a
// CR was answered 250, and so was the message: go-smtp's client then
// refused to write the RCPT line, and the message waited in the queue,
// relayed to none of its recipients (the good one before it included),
// until it was given up on after 5 days. A NUL went to the smarthost as it
// came, and so did an address beyond ASCII without SMTPUTF8.
func TestEnvelopeAddressChecked(t *testing.T) {
	r := newRig(t, 0)
	sc := dialSMTP(t, r.addr)
	sc.login()
	sc.send("MAIL FROM:<alice@example.org>", "250 ", "MAIL")
	sc.send("RCPT TO:<good@example.net>", "250 ", "a good recipient")
	for _, bad := range []string{"bob@example.net\rRSET", "bob@example.net\x00", "\"bob\x00\"@example.net", "\"x\x1b[2J\"@example.net", "bob@exa\x7fmple.net"} {
		sc.send("RCPT TO:<"+bad+">", "501 5.1.3 ", fmt.Sprintf("recipient %q", bad))
	}
	sc.send("RCPT TO:<j\xc3\xb6rg@example.net>", "553 5.6.7 ", "a recipient beyond ASCII without SMTPUTF8")
	sc.send("DATA", "354 ", "DATA")
	sc.send("From: alice@example.org\r\nMessage-ID: <checked@example.org>\r\n\r\nhi\r\n.", "250 2.0.0 Queued as", "the message")
	sc.send("MAIL FROM:<alice@example.org> SMTPUTF8", "250 ", "MAIL with SMTPUTF8")
	sc.send("RCPT TO:<j\xf6rg@example.net>", "501 5.1.3 ", "a recipient not in UTF-8")
	sc.send("RCPT TO:<j\xc3\xb6rg@example.net>", "250 ", "a recipient in UTF-8 with SMTPUTF8")
	sc.send("RSET", "250 ", "RSET")

	got := r.host.Wait(t, 1, wait)[0]
	if !slices.Equal(got.To, []string{"good@example.net"}) || submit.MessageID(got.Data) != "checked@example.org" {
		t.Errorf("relayed to %q: %q", got.To, got.Data)
	}
	// The smarthost has it before its 250 is recorded: wait for the record.
	var st outbox.Status
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if st, err = r.box.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st.Queued == 0 || time.Now().After(deadline) {
			break
		}
	}
	if st.Queued != 0 || st.LastError != "" {
		t.Errorf("outbox: %d queued, last error %q", st.Queued, st.LastError)
	}
}

// TestEnvelopeSenderForms: the forms of MAIL FROM off the plain one. The
// null sender, a trailing dot, an IDNA form of an identity's domain and a
// route to another address are not identities; a route to an identity, a
// quoted local part and SMTPUTF8 are read by go-smtp as the identity, and
// the relay sends that plain address.
func TestEnvelopeSenderForms(t *testing.T) {
	r := newRig(t, 0)
	sc := dialSMTP(t, r.addr)
	sc.login()
	for _, f := range []string{"<>", "<alice@example.org.>", "<alice@xn--exmple-cua.org>", "<@relay.example.net:boss@example.org>",
		"<\"alice@example.org\"@example.net>", "<alice@example.org,boss@example.org>"} {
		sc.send("MAIL FROM:"+f, "553 5.7.1 ", "MAIL FROM:"+f)
	}
	for i, f := range []string{"<@relay.example.net:alice@example.org>", "<\"al\\ice\"@example.org>", "<alice@example.org> SMTPUTF8"} {
		sc.send("MAIL FROM:"+f, "250 ", "MAIL FROM:"+f)
		sc.send("RCPT TO:<bob@example.net>", "250 ", "RCPT")
		sc.send("DATA", "354 ", "DATA")
		sc.send(fmt.Sprintf("From: alice@example.org\r\nMessage-ID: <sender-%d@example.org>\r\n\r\nhi\r\n.", i), "250 2.0.0 Queued as", "the message")
		if got := r.host.Wait(t, i+1, wait)[i]; got.From != "alice@example.org" {
			t.Errorf("MAIL FROM:%s relayed as MAIL FROM:<%s>, want <alice@example.org>", f, got.From)
		}
	}
}

// TestRecipientTwiceByASCIICase: a recipient given twice, the same
// address but for the case of ASCII letters, is one recipient; addresses
// that differ otherwise are two, told apart as identities are. They were
// compared lower-cased by Go, which also maps the Kelvin sign (U+212A) to
// k and a capital I with a dot (U+0130) to i: RCPT TO:<\u212Aate@...>
// then RCPT TO:<kate@...>, two addresses, were both answered 250, and the
// message was queued for the first alone.
func TestRecipientTwiceByASCIICase(t *testing.T) {
	q := &memQueue{}
	sc := dialSMTP(t, serveWith(t, submit.Config{Queue: q}))
	sc.login()
	sc.send("MAIL FROM:<alice@example.org> SMTPUTF8", "250 ", "MAIL")
	for _, a := range []string{"\u212Aate@example.net", "kate@example.net", "ilker@example.net", "\u0130lker@example.net", "Ilker@example.NET", "KATE@example.net"} {
		sc.send("RCPT TO:<"+a+">", "250 ", "RCPT "+a)
	}
	sc.send("DATA", "354 ", "DATA")
	sc.send("From: alice@example.org\r\n\r\nhi\r\n.", "250 ", "the message")
	var got []string
	for _, r := range q.all()[0].Recipients {
		got = append(got, r.Address)
	}
	if want := []string{"\u212Aate@example.net", "kate@example.net", "ilker@example.net", "\u0130lker@example.net"}; !slices.Equal(got, want) {
		t.Errorf("queued for %q, want %q", got, want)
	}
}

// TestCutShortNotQueued: a message whose connection ends before its end
// is neither queued nor relayed, sent with DATA or with BDAT. go-smtp
// reads a BDAT chunk with io.Copy from an io.LimitReader, which takes the
// connection's end for the chunk's: after "BDAT n LAST", a message cut
// off halfway ("Pay the invoice of 1000 euros;" without the "do NOT pay
// the other one" after it) was queued, relayed and filed in Sent, and the
// client, which never had its 250, sent it again whole.
func TestCutShortNotQueued(t *testing.T) {
	r := newRig(t, 0)
	msg := func(id string) string {
		return "From: alice@example.org\r\nMessage-ID: <" + id + "@example.org>\r\n\r\nPay the invoice of 1000 euros;\r\ndo NOT pay the other one.\r\n"
	}
	for _, tc := range []struct{ name, wire string }{
		{"DATA", "DATA\r\n" + msg("cut-data")[:80]},
		{"BDAT LAST", fmt.Sprintf("BDAT %d LAST\r\n", len(msg("cut-bdat"))) + msg("cut-bdat")[:80]},
		{"BDAT, then BDAT LAST", "BDAT 10\r\n" + msg("cut-two")[:10] + fmt.Sprintf("BDAT %d LAST\r\n", len(msg("cut-two"))-10) + msg("cut-two")[10:80]},
	} {
		sc := dialSMTP(t, r.addr)
		sc.login()
		sc.send("MAIL FROM:<alice@example.org>", "250 ", tc.name)
		sc.send("RCPT TO:<bob@example.net>", "250 ", tc.name)
		if _, err := io.WriteString(sc.c, tc.wire); err != nil {
			t.Fatal(err)
		}
		// Half closed: the server reads the end, answers what it does,
		// and closes; its answers are read to that end.
		if err := sc.c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		sc.c.SetReadDeadline(time.Now().Add(wait))
		rest, err := io.ReadAll(sc.br)
		if err != nil {
			t.Fatalf("%s: reading to the end: %v", tc.name, err)
		}
		if strings.Contains(string(rest), "Queued as") {
			t.Errorf("%s: a message cut short was answered %q", tc.name, rest)
		}
	}
	// A whole one after them: the first the smarthost gets.
	sc := dialSMTP(t, r.addr)
	sc.login()
	sc.send("MAIL FROM:<alice@example.org>", "250 ", "whole")
	sc.send("RCPT TO:<bob@example.net>", "250 ", "whole")
	whole := msg("whole")
	sc.send(fmt.Sprintf("BDAT %d LAST\r\n", len(whole))+strings.TrimSuffix(whole, "\r\n"), "250 2.0.0 Queued as", "whole")
	if got := r.host.Wait(t, 1, wait)[0]; submit.MessageID(got.Data) != "whole@example.org" || !strings.HasSuffix(string(got.Data), whole) {
		t.Errorf("relayed first %q, want the whole message", got.Data)
	}
	if sent := devicetest.WaitMessages(t, r.dev.Store, "Sent", 1, wait); len(sent) != 1 || sent[0].Envelope.MessageID != "whole@example.org" {
		t.Errorf("Sent holds %d messages, the first %q", len(sent), sent[0].Envelope.MessageID)
	}
}

// TestNoFinalCRLFRefused: a message whose last line does not end with
// CRLF, which only BDAT can send, gets 554 5.6.0. It was queued as it
// came, and the relay's dot writer ended the last line with a CRLF: the
// smarthost got another message than the one kept in Sent. One that ends
// with CRLF is relayed and kept byte for byte.
func TestNoFinalCRLFRefused(t *testing.T) {
	r := newRig(t, 0)
	sc := dialSMTP(t, r.addr)
	sc.login()
	cut := "From: alice@example.org\r\nMessage-ID: <no-crlf@example.org>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nthe last line\r\n."
	for _, m := range []struct{ msg, want string }{{cut, "554 5.6.0 The message does not end with CRLF"}, {strings.Replace(cut, "no-crlf", "crlf", 1) + "\r\n", "250 2.0.0 Queued as"}} {
		sc.send("MAIL FROM:<alice@example.org>", "250 ", "MAIL")
		sc.send("RCPT TO:<bob@example.net>", "250 ", "RCPT")
		if _, err := io.WriteString(sc.c, fmt.Sprintf("BDAT %d LAST\r\n", len(m.msg))+m.msg); err != nil {
			t.Fatal(err)
		}
		if got := sc.reply(); !strings.HasPrefix(got, m.want) {
			t.Fatalf("BDAT %q: %q, want %s", m.msg, got, m.want)
		}
	}
	got := r.host.Wait(t, 1, wait)[0]
	sent := devicetest.WaitMessages(t, r.dev.Store, "Sent", 1, wait)
	if want := strings.Replace(cut, "no-crlf", "crlf", 1) + "\r\n"; string(got.Data) != want || string(sent[0].Raw) != want {
		t.Errorf("relayed %q, in Sent %q, want both %q", got.Data, sent[0].Raw, want)
	}
}

// TestSizeAdvertisedIsAccepted: EHLO's SIZE is the largest message taken
// (RFC 1870), with DATA and with BDAT, and a byte more is refused, at MAIL
// (SIZE=) and at the end of the data, with a reply naming the limit, and
// the connection goes on. EHLO named one byte more than was taken.
func TestSizeAdvertisedIsAccepted(t *testing.T) {
	const limit = 4096
	r := newRig(t, limit)
	sc := dialSMTP(t, r.addr)
	if _, err := io.WriteString(sc.c, "EHLO client.test\r\n"); err != nil {
		t.Fatal(err)
	}
	var size string
	sc.c.SetReadDeadline(time.Now().Add(wait))
	for {
		l, err := sc.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := strings.CutPrefix(strings.TrimRight(l[4:], "\r\n"), "SIZE "); ok {
			size = v
		}
		if len(l) < 4 || l[3] != '-' {
			break
		}
	}
	if size != fmt.Sprint(limit) {
		t.Errorf("EHLO says SIZE %s, the limit is %d", size, limit)
	}
	sc.send("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password)), "235 ", "login")
	// Every refusal names the limit: go-smtp's own said "Max message
	// size exceeded" (MAIL SIZE, BDAT) or "Maximum message size
	// exceeded" (DATA).
	const tooLarge = "552 5.3.4 The message is over the size limit of 4096 bytes"
	message := func(id string, n int) string {
		head := "From: alice@example.org\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + id + "@example.org>\r\n\r\n"
		body := strings.Repeat(strings.Repeat("x", 98)+"\r\n", (n-len(head))/100)
		return head + body + strings.Repeat("y", n-len(head)-len(body)-2) + "\r\n"
	}
	for _, tc := range []struct {
		name string
		n    int
		want string
	}{{"data-at-limit", limit, "250 2.0.0 Queued as"}, {"data-over", limit + 1, tooLarge},
		{"bdat-at-limit", limit, "250 2.0.0 Queued as"}, {"bdat-over", limit + 1, tooLarge}} {
		m := message(tc.name, tc.n)
		sc.send(fmt.Sprintf("MAIL FROM:<alice@example.org> SIZE=%d", tc.n), map[bool]string{true: tooLarge, false: "250 "}[tc.n > limit], tc.name+" MAIL SIZE")
		if tc.n > limit {
			sc.send("MAIL FROM:<alice@example.org>", "250 ", tc.name)
		}
		sc.send("RCPT TO:<bob@example.net>", "250 ", tc.name)
		var wire string
		if strings.HasPrefix(tc.name, "data") {
			sc.send("DATA", "354 ", tc.name)
			wire = m + ".\r\n"
		} else {
			wire = fmt.Sprintf("BDAT %d LAST\r\n", len(m)) + m
		}
		if _, err := io.WriteString(sc.c, wire); err != nil {
			t.Fatal(err)
		}
		if got := sc.reply(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s (%d bytes): %q, want %s", tc.name, len(m), got, tc.want)
		}
		sc.send("RSET", "250 ", tc.name+" RSET")
	}
}

// TestLongLineRefused: a line of over 998 bytes before its CRLF (RFC 5322
// section 2.1.1; RFC 5321 section 4.5.3.1.6), in the header or the body,
// sent with DATA or BDAT, gets 554 5.6.0 naming its length and where it
// is, and the connection goes on; a line of 998 bytes is relayed and kept
// byte for byte. It was queued and relayed as it came: Postfix breaks such
// a line with a CRLF and a space, so the recipients got another message
// than the one in Sent, and a smarthost with a line limit refused it after
// the client had its 250 (a bounce in INBOX).
func TestLongLineRefused(t *testing.T) {
	r := newRig(t, 0)
	sc := dialSMTP(t, r.addr)
	sc.login()
	head := func(id string) string {
		return "From: alice@example.org\r\nMessage-ID: <" + id + "@example.org>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
	}
	line := func(n int) string { return strings.Repeat("l", n) + "\r\n" }
	fits := head("fits") + "Subject: " + line(998-len("Subject: ")) + "\r\nfirst\r\n" + line(998) + "." + line(997)
	for _, tc := range []struct{ name, msg, want string }{
		{"data-body", head("body") + "\r\nfirst\r\n" + line(999), "554 5.6.0 The message has a line of 999 bytes (line 2 of its body)"},
		{"data-header", head("header") + "Subject: " + line(999-len("Subject: ")) + "\r\nhi\r\n", "554 5.6.0 The message has a line of 999 bytes (line 4 of its header)"},
		{"data-dot-stuffed", head("dot") + "\r\n." + line(998), "554 5.6.0 The message has a line of 999 bytes (line 1 of its body)"},
		{"bdat-body", head("bdat") + "\r\n" + line(5000), "554 5.6.0 The message has a line of 5000 bytes (line 1 of its body)"},
		{"data-998", fits, "250 2.0.0 Queued as"},
	} {
		sc.send("MAIL FROM:<alice@example.org>", "250 ", tc.name)
		sc.send("RCPT TO:<bob@example.net>", "250 ", tc.name)
		var wire string
		if strings.HasPrefix(tc.name, "bdat") {
			wire = fmt.Sprintf("BDAT %d LAST\r\n", len(tc.msg)) + tc.msg
		} else {
			sc.send("DATA", "354 ", tc.name)
			// Dot-stuffed: a line starting with a dot is one byte longer
			// on the wire than in the message.
			wire = strings.ReplaceAll("\n"+tc.msg, "\n.", "\n..")[1:] + ".\r\n"
		}
		if _, err := io.WriteString(sc.c, wire); err != nil {
			t.Fatal(err)
		}
		if got := sc.reply(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %q, want %s", tc.name, got, tc.want)
		}
		sc.send("NOOP", "250 ", tc.name+" NOOP after")
	}
	got := r.host.Wait(t, 1, wait)
	sent := devicetest.WaitMessages(t, r.dev.Store, "Sent", 1, wait)
	if len(got) != 1 || string(got[0].Data) != fits || string(sent[0].Raw) != fits {
		t.Errorf("relayed %d messages, the first %q, in Sent %q; want the one of 998-byte lines, as sent", len(got), short(got[0].Data), short(sent[0].Raw))
	}
}

// TestResubmissionWithoutMessageID: a client that lost the 250 (here it
// closes the connection after the final dot) and sends the message again,
// smtplib, gets the first one's queue id, and the message is relayed once,
// also when it has no Message-ID, provided it has a Date of the client's.
// The listener adds a new Message-ID each time, and the outbox took the
// second submission for another message: the recipients got it twice.
// Without Date either, the same text sent again is another message
// (relayed twice), as a script may send it twice on purpose.
func TestResubmissionWithoutMessageID(t *testing.T) {
	r := newRig(t, 0)
	const dated = "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: dated\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n"
	const undated = "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: undated\r\n\r\nhi\r\n"
	relayed := 0
	for _, tc := range []struct {
		name, msg string
		again     bool // the second submission is the first one
	}{{"dated", dated, true}, {"undated", undated, false}} {
		sc := dialSMTP(t, r.addr)
		sc.login()
		sc.send("MAIL FROM:<alice@example.org>", "250 ", tc.name)
		sc.send("RCPT TO:<bob@example.net>", "250 ", tc.name)
		sc.send("DATA", "354 ", tc.name)
		if _, err := io.WriteString(sc.c, tc.msg+".\r\n"); err != nil {
			t.Fatal(err)
		}
		sc.c.Close() // the 250 is lost
		relayed++
		first := submit.MessageID(r.host.Wait(t, relayed, wait)[relayed-1].Data)
		got := r.python(password, "refused", "alice@example.org", r.file(tc.name+".eml", tc.msg), "bob@example.net")
		if len(got) != 3 || !strings.HasPrefix(got[2], "DATA 250 2.0.0 Queued as ") {
			t.Fatalf("%s sent again: %q", tc.name, got)
		}
		if !tc.again {
			relayed++
		}
		// A message after it: once it is relayed, the one before was
		// relayed again or not.
		marker := fmt.Sprintf("From: alice@example.org\r\nSubject: after %s\r\nMessage-ID: <after-%s@example.org>\r\n\r\nx\r\n", tc.name, tc.name)
		r.python(password, "send", "alice@example.org", r.file("after.eml", marker), "bob@example.net")
		relayed++
		got2 := r.host.Wait(t, relayed, wait)
		if want := "after-" + tc.name + "@example.org"; len(got2) != relayed || submit.MessageID(got2[relayed-1].Data) != want {
			t.Fatalf("%s: the smarthost has %d messages, the last %q; want %d, the last %s", tc.name, len(got2), submit.MessageID(got2[len(got2)-1].Data), relayed, want)
		}
		if again := submit.MessageID(got2[relayed-2].Data) != first; again != !tc.again {
			t.Errorf("%s: sent again, relayed again %v, want %v", tc.name, again, !tc.again)
		}
	}
}

// TestEnvelopeIDChecked: an ENVID (RFC 3461) that decodes to over 100
// characters, or to a byte outside printable ASCII, gets 501 at MAIL; one
// of 100 printable characters is taken and the message relayed. One over
// 100 was answered 250 and passed on as it came, which RFC 3461 section
// 4.4 forbids a client: a smarthost that holds to it refuses the MAIL,
// and the message bounced.
func TestEnvelopeIDChecked(t *testing.T) {
	r := newRig(t, 0)
	sc := dialSMTP(t, r.addr)
	sc.login()
	for _, bad := range []string{strings.Repeat("x", 101), "a+00b", "a+0D+0AMAIL", "caf+C3+A9", "a+7Fb"} {
		sc.send("MAIL FROM:<alice@example.org> ENVID="+bad, "501 5.5.4 ", "ENVID="+bad)
	}
	sc.send("MAIL FROM:<alice@example.org> ENVID=ok+2Bid+20x"+strings.Repeat("y", 93), "250 ", "a printable ENVID of 100 characters")
	sc.send("RCPT TO:<bob@example.net>", "250 ", "RCPT")
	sc.send("DATA", "354 ", "DATA")
	sc.send("From: alice@example.org\r\nMessage-ID: <envid@example.org>\r\n\r\nhi\r\n.", "250 2.0.0 Queued as", "the message")
	r.host.Wait(t, 1, wait)
	var st outbox.Status
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if st, err = r.box.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st.Queued == 0 || time.Now().After(deadline) {
			break
		}
	}
	if st.Queued != 0 || st.LastError != "" {
		t.Errorf("outbox: %d queued, last error %q", st.Queued, st.LastError)
	}
}
