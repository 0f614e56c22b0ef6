package imapd

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/testproc"
)

// The odd messages (testdata/odd/*.eml) are mail as it comes from old,
// broken or hostile software: bare CRs and LFs, NUL bytes, 8-bit and
// broken RFC 2047 headers, groups, repeated fields, MIME without
// boundaries or subtypes, RFC 2231 parameters, obsolete dates and
// addresses. Their answers to oddItems are recorded in
// testdata/odd/cspool.txt, and Dovecot 2.3.19's in testdata/odd/dovecot.txt
// (docs/IMAP.md, "Odd messages, compared with Dovecot").
// CSPOOL_ODD_RECORD=1 writes the files from the answers instead of
// comparing (one test writes each).

// oddItems are fetched one at a time, so each answer stands alone.
var oddItems = []string{"ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE",
	"BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "BINARY.SIZE[1]"}

// oddDifferences are the answers where cspool and Dovecot differ beyond
// what oddSameForm takes for the same, each with the decision taken
// (docs/IMAP.md, "Odd messages, compared with Dovecot"). An answer that
// differs and is not here fails TestOddMessages, and so does one here
// that no longer differs.
var oddDifferences = map[[2]string]string{
	{"addresses-obsolete", "ENVELOPE"}:                   "both: Dovecot keeps an obsolete route as the adl and writes MISSING_MAILBOX for an empty list element and for a name without an address; cspool drops the route and the empty elements and keeps root; cspool better on `Dave d@example.net`: the name Dave and the address d@example.net (it was the address Daved@example.net), where Dovecot keeps the name `Dave d` and loses the address",
	{"bare-lf", "BODYSTRUCTURE"}:                         "both: Dovecot serves a bare LF as CRLF and counts so; cspool serves and counts the bytes as delivered",
	{"bare-lf", "BODY"}:                                  "both: as BODYSTRUCTURE",
	{"bare-lf", "RFC822.SIZE"}:                           "both: as BODYSTRUCTURE",
	{"bare-lf", "BINARY.SIZE[1]"}:                        "both: as BODYSTRUCTURE",
	{"mixed-line-ends", "RFC822.SIZE"}:                   "both: as bare-lf",
	{"nested-rfc822", "BODYSTRUCTURE"}:                   "cspool right: the line break before a delimiter is the delimiter's (RFC 2046 section 5.1.1); Dovecot counts it into the message/rfc822 part",
	{"nested-rfc822", "BODY"}:                            "as BODYSTRUCTURE",
	{"multipart-no-boundary", "BODYSTRUCTURE"}:           "cspool better: a multipart without a boundary is one text part of its body (Simplified); Dovecot shows one empty part",
	{"multipart-no-boundary", "BODY"}:                    "as BODYSTRUCTURE",
	{"multipart-no-boundary", "BINARY.SIZE[1]"}:          "as BODYSTRUCTURE",
	{"cte-odd", "BODYSTRUCTURE"}:                         "both: cspool writes the encoding in lower case (RFC 2045 section 6.1: case does not matter)",
	{"cte-odd", "BODY"}:                                  "as BODYSTRUCTURE",
	{"cte-odd", "BINARY.SIZE[1]"}:                        "cspool right: part 1 is base64; Dovecot refuses it for part 2's unknown encoding",
	{"rfc822-base64", "BINARY.SIZE[1]"}:                  "cspool right: the part decodes to 45 bytes; Dovecot says 0",
	{"type-uppercase", "BODYSTRUCTURE"}:                  "both: cspool writes type, subtype, parameter names and encoding in lower case and the parameters by name; Dovecot as they came",
	{"type-uppercase", "BODY"}:                           "as BODYSTRUCTURE",
	{"disposition-language", "BODYSTRUCTURE"}:            "both: the disposition in lower case",
	{"no-charset-multipart", "BODYSTRUCTURE"}:            "both: parameters by name; Dovecot puts the default charset last",
	{"no-charset-multipart", "BODY"}:                     "as BODYSTRUCTURE",
	{"rfc2231-continued", "BODYSTRUCTURE"}:               "both: cspool decodes RFC 2231 parameters into UTF-8 (docs/MAILSTORE.md, Parsing); Dovecot passes them as they came",
	{"rfc2231-continued", "BODY"}:                        "as BODYSTRUCTURE",
	{"rfc2231-latin1", "BODYSTRUCTURE"}:                  "as rfc2231-continued",
	{"rfc2231-latin1", "BODY"}:                           "as rfc2231-continued",
	{"type-garbage", "BODYSTRUCTURE"}:                    "both wrong, left open: RFC 2045 section 5.2 takes a Content-Type that is not valid for text/plain; the library's section parser reads the type as it is, and part numbers must agree with it",
	{"type-garbage", "BODY"}:                             "as BODYSTRUCTURE",
	{"md5-folded", "BODYSTRUCTURE"}:                      "both: a folded Content-MD5 unfolded; Dovecot keeps the fold's and the trailing white space; base64 decoders ignore it (RFC 2045 section 6.8)",
	{"empty-from", "ENVELOPE"}:                           "cspool right: an empty From is NIL and an empty Sender takes From's value (RFC 3501 section 7.4.2); Dovecot makes `<>` an address",
	{"multiple-fields", "ENVELOPE"}:                      "both: RFC 5322 allows one; cspool takes the first Date, Subject and Message-ID, as clients reading the header do; Dovecot the last",
	{"message-id-odd", "ENVELOPE"}:                       "both: the Message-ID without brackets written in them, the comment of In-Reply-To left out; it was NIL",
	{"in-reply-to-garbage", "ENVELOPE"}:                  "both: In-Reply-To's id in brackets without the text around it (it was NIL), Message-ID trimmed; Dovecot the fields' text",
	{"ew-adjacent", "ENVELOPE"}:                          "both: Dovecot passes encoded words as they came, for the client to decode; cspool decodes them (adjacent words joined, RFC 2047 section 6.2) and writes them again as UTF-8 words",
	{"ew-bad-encoding", "ENVELOPE"}:                      "as ew-adjacent",
	{"ew-inside-word", "ENVELOPE"}:                       "as ew-adjacent: words inside words and with spaces decoded, as clients decode them",
	{"ew-latin1-and-tab-fold", "ENVELOPE"}:               "as ew-adjacent",
	{"ew-split-char", "ENVELOPE"}:                        "as ew-adjacent: a character split between two words joined",
	{"utf8-header", "ENVELOPE"}:                          "both: 8-bit UTF-8 text: Dovecot as it came in a literal, cspool as UTF-8 words",
	{"latin1-header", "ENVELOPE"}:                        "both: 8-bit Latin-1 text: Dovecot the bytes in a literal, cspool read as windows-1252 and written as UTF-8 words (it was U+FFFD)",
	{"nul-header", "ENVELOPE"}:                           "both: Dovecot writes a NUL as the byte 0x80, cspool as U+FFFD (it was a NUL in an encoded word)",
	{"nul-header", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"}: "cspool right: the field's bytes as delivered; Dovecot writes the NUL as 0x80",
}

// addressSpace is the space go-imap writes between two addresses of a
// list, where Dovecot writes none (docs/IMAP.md, "Addresses").
var addressSpace = regexp.MustCompile(`([^)])\) \(`)

// literal is a literal's announcement in an answer.
var literal = regexp.MustCompile(`\{([0-9]+)\}\r\n`)

// unliteral returns the answer d with each literal outside a section's
// data that could be a quoted string written as one, as cspool writes
// it: Dovecot writes a long or folded subject as a literal.
func unliteral(d string) string { return rewriteLiterals(d, false) }

// rewriteLiterals writes each literal of d outside a section's data that
// can be a quoted string as one; with escape, also one that holds quotes
// or backslashes, escaped.
func rewriteLiterals(d string, escape bool) string {
	if strings.Contains(d, "BODY[") || strings.Contains(d, "BINARY[") {
		return d
	}
	var b strings.Builder
	for {
		loc := literal.FindStringSubmatchIndex(d)
		if loc == nil {
			b.WriteString(d)
			return b.String()
		}
		n, _ := strconv.Atoi(d[loc[2]:loc[3]])
		if loc[1]+n > len(d) {
			b.WriteString(d)
			return b.String()
		}
		text := d[loc[1] : loc[1]+n]
		b.WriteString(d[:loc[0]])
		switch {
		case quotable(text):
			b.WriteString(`"` + text + `"`)
		case escape && quotable(strings.NewReplacer(`"`, "", `\`, "").Replace(text)):
			b.WriteString(`"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(text) + `"`)
		default:
			b.WriteString(d[loc[0] : loc[1]+n])
		}
		d = d[loc[1]+n:]
	}
}

// quotable reports whether s can be an IMAP quoted string as it is.
func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// headerList is the header-list of a HEADER.FIELDS section in an answer.
var headerList = regexp.MustCompile(`^BODY\[[0-9.]*HEADER\.FIELDS(?:\.NOT)? \(([^)]*)\)\]`)

// oddSameForm reports whether cspool's answer c and Dovecot's d say the
// same in the forms that differ in every message: the header-list of
// HEADER.FIELDS quoted (an astring either way), BINARY's data a literal8
// (RFC 3516 section 7 allows a literal too), the space between two
// addresses, and a string that Dovecot writes as a literal.
func oddSameForm(item, c, d string) bool {
	d = unliteral(d)
	if m := headerList.FindStringSubmatchIndex(c); m != nil {
		c = c[:m[2]] + strings.ReplaceAll(c[m[2]:m[3]], `"`, "") + c[m[3]:]
	}
	if strings.HasPrefix(item, "BINARY.PEEK") {
		c, d = strings.Replace(c, "] ~{", "] {", 1), strings.Replace(d, "] ~{", "] {", 1)
	}
	switch item {
	case "ENVELOPE":
		c = addressSpace.ReplaceAllString(c, "$1)(")
	}
	return c == d
}

type oddMessage struct {
	name string
	raw  []byte
}

// corpus reads the messages of testdata/DIR, in the order of their names.
func corpus(t *testing.T, dir string) []oddMessage {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", dir, "*.eml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no messages in testdata/%s: %v", dir, err)
	}
	slices.Sort(paths)
	var ms []oddMessage
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, oddMessage{strings.TrimSuffix(filepath.Base(p), ".eml"), raw})
	}
	return ms
}

// deliveredWire delivers ms to a new device, in order, and returns a
// logged-in connection to it with INBOX selected.
func deliveredWire(t *testing.T, ms []oddMessage) *wire {
	t.Helper()
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for _, m := range ms {
		pos = r.Deliver(m.raw)
	}
	d.synced(pos)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	return w
}

// fetchItems fetches every item of every message, one FETCH each, from a
// connection with INBOX selected holding the messages in order. An
// answer is the FETCH response's items, or the tagged status when the
// command was not answered OK.
func fetchItems(t *testing.T, w *wire, ms []oddMessage, items []string) map[[2]string]string {
	t.Helper()
	got := map[[2]string]string{}
	for i, m := range ms {
		seq := i + 1
		for _, item := range items {
			u, tagged := w.run(fmt.Sprintf("FETCH %d (%s)", seq, item))
			prefix := fmt.Sprintf("* %d FETCH (", seq)
			var fetches []string
			for _, r := range u {
				if strings.HasPrefix(r, prefix) {
					fetches = append(fetches, strings.TrimSuffix(strings.TrimPrefix(r, prefix), ")\r\n"))
				}
			}
			switch {
			case status(tagged) != "OK":
				got[[2]string{m.name, item}] = status(tagged)
			case len(fetches) != 1:
				t.Fatalf("%s %s: %d FETCH responses: %q", m.name, item, len(fetches), u)
			default:
				got[[2]string{m.name, item}] = fetches[0]
			}
		}
	}
	return got
}

// itemsRecord reads testdata/DIR/FILE, a file of answers, after writing
// got into it first under CSPOOL_ODD_RECORD=1 when got is not nil: one
// line a message and item, `name item "answer"`, the answer a Go string
// literal.
func itemsRecord(t *testing.T, dir, file string, ms []oddMessage, items []string, got map[[2]string]string) map[[2]string]string {
	t.Helper()
	path := filepath.Join("testdata", dir, file)
	if got != nil && os.Getenv("CSPOOL_ODD_RECORD") == "1" {
		var b bytes.Buffer
		for _, m := range ms {
			for _, item := range items {
				fmt.Fprintf(&b, "%s\t%s\t%s\n", m.name, item, strconv.Quote(got[[2]string{m.name, item}]))
			}
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
	return readRecorded(t, path)
}

// compareItems fails for each answer to items that is not the recorded one.
func compareItems(t *testing.T, who string, ms []oddMessage, items []string, got, rec map[[2]string]string) {
	t.Helper()
	for _, m := range ms {
		for _, item := range items {
			k := [2]string{m.name, item}
			want, ok := rec[k]
			if !ok {
				t.Errorf("%s %s: no recorded answer", m.name, item)
				continue
			}
			if got[k] != want {
				t.Errorf("%s %s %s:\n got  %q\n want %q", who, m.name, item, got[k], want)
			}
		}
	}
}

// TestOddMessages delivers the odd messages to a device and fetches
// oddItems of each: every answer is the one recorded in cspool.txt, and
// where it is not Dovecot's (dovecot.txt), the difference is one decided
// on in oddDifferences. The served bytes are the delivered ones.
func TestOddMessages(t *testing.T) {
	t.Parallel()
	ms := corpus(t, "odd")
	w := deliveredWire(t, ms)
	got := fetchItems(t, w, ms, oddItems)
	rec := itemsRecord(t, "odd", "cspool.txt", ms, oddItems, got)
	compareItems(t, "cspool", ms, oddItems, got, rec)

	dove := itemsRecord(t, "odd", "dovecot.txt", ms, oddItems, nil)
	if os.Getenv("CSPOOL_ODD_RECORD") == "1" {
		return
	}
	seen := map[[2]string]bool{}
	for _, m := range ms {
		for _, item := range oddItems {
			k := [2]string{m.name, item}
			_, decided := oddDifferences[k]
			seen[k] = true
			same := oddSameForm(item, got[k], dove[k])
			switch {
			case !same && !decided:
				t.Errorf("%s %s differs from Dovecot's answer, with no decision in oddDifferences:\n cspool  %q\n dovecot %q", m.name, item, got[k], dove[k])
			case same && decided:
				t.Errorf("%s %s: oddDifferences has a decision, but the answer is Dovecot's now: %q", m.name, item, got[k])
			}
		}
	}
	for k := range oddDifferences {
		if !seen[k] {
			t.Errorf("oddDifferences names %s %s, which is no message and item of the corpus", k[0], k[1])
		}
	}

	// The part after a delimiter line in CRLF, in a multipart whose
	// first one ends in LF, is found as the structure shows it.
	for i, m := range ms {
		if m.name != "mixed-line-ends" {
			continue
		}
		u := w.ok(fmt.Sprintf("FETCH %d (BODY.PEEK[2] BINARY.PEEK[2])", i+1))
		want := fmt.Sprintf("* %d FETCH (BODY[2] {8}\r\n<p>x</p> BINARY[2] ~{8}\r\n<p>x</p>)\r\n", i+1)
		if len(u) != 1 || u[0] != want {
			t.Errorf("%s: part 2:\n got  %q\n want %q", m.name, u, want)
		}
	}

	// The bytes are served as delivered.
	for i, m := range ms {
		u := w.ok(fmt.Sprintf("FETCH %d (BODY.PEEK[])", i+1))
		want := fmt.Sprintf("* %d FETCH (BODY[] {%d}\r\n%s)\r\n", i+1, len(m.raw), m.raw)
		if len(u) != 1 || u[0] != want {
			t.Errorf("%s: BODY[] is not the delivered bytes", m.name)
		}
	}
}

// TestOddMessagesDovecot appends the odd messages to a private Dovecot
// (dovecot-imapd, run as docs/IMAP.md says) and checks its answers are
// the ones recorded in dovecot.txt, which TestOddMessages compares
// cspool's with. It skips when Dovecot is not installed, outside CI.
func TestOddMessagesDovecot(t *testing.T) {
	t.Parallel()
	ms := corpus(t, "odd")
	w := dovecotWire(t)
	appendBinary(w, ms)
	got := fetchItems(t, w, ms, oddItems)
	rec := itemsRecord(t, "odd", "dovecot.txt", ms, oddItems, got)
	compareItems(t, "dovecot", ms, oddItems, got, rec)
	w.ok("LOGOUT")
}

// dovecotWire starts a private Dovecot (skipping, outside CI, when it is
// not installed) and returns a connection to it, logged in as alice.
func dovecotWire(t *testing.T) *wire {
	t.Helper()
	w := dialWire(t, startDovecot(t, needToolIn(t, "dovecot", "dovecot-imapd")))
	w.ok(`LOGIN alice "` + testPassword + `"`)
	return w
}

// appendBinary appends the messages to INBOX as literal8 (Dovecot
// refuses a NUL in a plain literal), and selects it.
func appendBinary(w *wire, ms []oddMessage) {
	for _, m := range ms {
		w.ok(fmt.Sprintf("APPEND INBOX ~{%d}\r\n%s", len(m.raw), m.raw))
	}
	w.ok("SELECT INBOX")
}

// startDovecot runs a private Dovecot, IMAP only, on a loopback port of
// the test's range, with one user (alice, testPassword) and its Maildir
// in a temporary folder; it is stopped when the test ends. The extra
// lines are added to its configuration.
func startDovecot(t *testing.T, dovecot string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	// Dovecot's auth and mail processes run as users of their own, and
	// read the password file and the mail through these folders.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if os.Getuid() != 0 {
		// Dovecot's master sets up its processes' users as root; run
		// as another user it needs settings of its own (left untried).
		t.Skip("a private Dovecot is started as root only (CI runs as root)")
	}
	// Dovecot gives no mail to root: nobody owns it.
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("dovecot needs the user nobody for the mail: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	mail := filepath.Join(dir, "mail")
	for _, d := range []string{"run", "state", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(mail, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte("alice:{PLAIN}"+testPassword+"::::::\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := testproc.FreePort(t)
	conf := fmt.Sprintf(`instance_name = cspool-odd-%d
protocols = imap
listen = 127.0.0.1
base_dir = %[2]s/run
state_dir = %[2]s/state
log_path = %[2]s/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%n %[2]s/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%%n %[2]s/passwd
  default_fields = uid=%[3]d gid=%[4]d home=%[5]s/%%n
}
mail_location = maildir:%[5]s/%%n/Maildir
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[6]d
  }
  inet_listener imaps {
    port = 0
  }
}
`, port, dir, uid, gid, mail, port) + strings.Join(extra, "\n")
	cf := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Not CombinedOutput: the master keeps the pipes open once it forks.
	out, err := os.Create(filepath.Join(dir, "start.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dovecot, "-c", cf)
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	out.Close()
	if err != nil {
		msg, _ := os.ReadFile(out.Name())
		t.Fatalf("starting dovecot: %v: %s", err, msg)
	}
	t.Cleanup(func() {
		pid, err := os.ReadFile(filepath.Join(dir, "run", "master.pid"))
		if err != nil {
			return
		}
		p, err := strconv.Atoi(strings.TrimSpace(string(pid)))
		if err != nil {
			return
		}
		proc, err := os.FindProcess(p)
		if err != nil {
			return
		}
		proc.Signal(syscall.SIGTERM)
		for range 50 {
			if proc.Signal(syscall.Signal(0)) != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Logf("dovecot's log:\n%s", log)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for range 50 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
	t.Fatalf("dovecot did not listen on %s: %s", addr, log)
	return ""
}

// readRecorded reads a file of recorded answers: one a line, the
// message's name, the item and the answer quoted (strconv.Quote), by tabs.
func readRecorded(t *testing.T, path string) map[[2]string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := map[[2]string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "\t", 3)
		if len(parts) != 3 {
			t.Fatalf("%s: malformed line %q", path, sc.Text())
		}
		a, err := strconv.Unquote(parts[2])
		if err != nil {
			t.Fatalf("%s: %s %s: %v", path, parts[0], parts[1], err)
		}
		rec[[2]string{parts[0], parts[1]}] = a
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rec
}
