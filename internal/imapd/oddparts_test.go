package imapd

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The odd multiparts (testdata/oddparts/*.eml) are read part by part, as
// a mail client reads them: the structure, then each part the structure
// lists (BODY[n], BODY[n.MIME], BODY[n.HEADER], BODY[n.TEXT], the first
// 100 bytes), the message's header and text, its envelope and size.
// Their answers are recorded in testdata/oddparts/cspool.txt, and
// Dovecot 2.3.19's in testdata/oddparts/dovecot.txt (docs/IMAP.md, "Odd
// messages, part by part"). CSPOOL_ODD_RECORD=1 writes the files from the
// answers instead of comparing.

// oddPartsItems are fetched for every message; partItems for every part
// its structure lists.
var oddPartsItems = []string{"BODYSTRUCTURE", "ENVELOPE", "RFC822.SIZE",
	"BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]", "BODY.PEEK[TEXT]<0.100>"}

var partItems = []string{"BODY.PEEK[%s]", "BODY.PEEK[%s.MIME]", "BODY.PEEK[%s.HEADER]",
	"BODY.PEEK[%s.TEXT]", "BODY.PEEK[%s]<0.100>",
	"BODY.PEEK[%s.HEADER.FIELDS (SUBJECT CONTENT-TYPE)]", "BODY.PEEK[%s.HEADER.FIELDS.NOT (SUBJECT)]",
	"BINARY.PEEK[%s]", "BINARY.SIZE[%s]", "BODY.PEEK[%s.TEXT]<3.10>"}

// oddPartsDifferences are the answers where cspool and Dovecot differ
// beyond what oddSameForm takes for the same, each with the decision
// taken (docs/IMAP.md, "Odd messages, part by part").
var oddPartsDifferences = map[[2]string]string{
	{"addresses-groups", "ENVELOPE"}:                                        "both: of `(comment) dave@example.net (Dave)` cspool takes the first comment for the name, Dovecot the last; neither is a display name (RFC 5322 section 3.4)",
	{"bare-lf-multipart", "BODY.PEEK[HEADER]"}:                              "both: Dovecot serves a bare LF as CRLF and counts so; cspool serves and counts the bytes as delivered (as bare-lf of the odd messages)",
	{"bare-lf-multipart", "BODY.PEEK[TEXT]"}:                                "as BODY.PEEK[HEADER]",
	{"bare-lf-multipart", "BODY.PEEK[TEXT]<0.100>"}:                         "as BODY.PEEK[HEADER]",
	{"bare-lf-multipart", "RFC822.SIZE"}:                                    "as BODY.PEEK[HEADER]",
	{"cut-bare-lf", "BODY.PEEK[HEADER]"}:                                    "as bare-lf-multipart",
	{"cut-bare-lf", "BODY.PEEK[TEXT]"}:                                      "as bare-lf-multipart",
	{"cut-bare-lf", "BODY.PEEK[TEXT]<0.100>"}:                               "as bare-lf-multipart",
	{"cut-bare-lf", "RFC822.SIZE"}:                                          "as bare-lf-multipart",
	{"cut-bare-lf", "BODYSTRUCTURE"}:                                        "as bare-lf-multipart: the part cut short keeps its last LF (10 bytes and 2 lines; Dovecot 12 in CRLF)",
	{"cut-bare-lf", "BODY.PEEK[2]"}:                                         "as BODYSTRUCTURE",
	{"cut-bare-lf", "BODY.PEEK[2]<0.100>"}:                                  "as BODYSTRUCTURE",
	{"boundary-in-preamble", "BODYSTRUCTURE"}:                               "both: Dovecot takes `--b1x` for a delimiter (the boundary as a prefix of the line, RFC 2046 section 5.1.1's note to implementors) and finds an empty part before the one part; cspool a delimiter line only as the boundary and white space (the section's grammar); the boundary must be in no line of the parts, so the message is ill-formed either way",
	{"boundary-in-preamble", "BODY.PEEK[1]"}:                                "as BODYSTRUCTURE",
	{"boundary-in-preamble", "BODY.PEEK[1]<0.100>"}:                         "as BODYSTRUCTURE",
	{"boundary-in-preamble", "BODY.PEEK[1.MIME]"}:                           "as BODYSTRUCTURE",
	{"boundary-prefix", "BODY.PEEK[1]"}:                                     "cspool right: the line break before the outer delimiter is the delimiter's (RFC 2046 section 5.1.1), so the inner multipart ends with its closing delimiter; Dovecot counts it in (as nested-rfc822 of the odd messages)",
	{"boundary-prefix", "BODY.PEEK[1]<0.100>"}:                              "as BODY.PEEK[1]",
	{"nested-no-body", "BODYSTRUCTURE"}:                                     "cspool right: as boundary-prefix, the line break before the delimiter is not the message/rfc822 part's (43 bytes; Dovecot 45)",
	{"nested-no-body", "BODY.PEEK[1]"}:                                      "as BODYSTRUCTURE",
	{"nested-no-body", "BODY.PEEK[1]<0.100>"}:                               "as BODYSTRUCTURE",
	{"empty-multipart", "BODYSTRUCTURE"}:                                    "both: a multipart of no part has no BODYSTRUCTURE (body-type-mpart has one part at least, RFC 9051 section 9); cspool serves its body as one text part (Simplified), Dovecot makes up an empty part",
	{"empty-multipart", "BODY.PEEK[1]"}:                                     "as BODYSTRUCTURE",
	{"empty-multipart", "BODY.PEEK[1]<0.100>"}:                              "as BODYSTRUCTURE",
	{"empty-parts", "BODYSTRUCTURE"}:                                        "both: a delimiter followed at once by another (a part without even a blank line) makes the library give up on the multipart, served as one text part of the body (Simplified); Dovecot shows four empty parts",
	{"empty-parts", "BODY.PEEK[1]"}:                                         "as BODYSTRUCTURE",
	{"empty-parts", "BODY.PEEK[1]<0.100>"}:                                  "as BODYSTRUCTURE",
	{"part-no-blank-line", "BODYSTRUCTURE"}:                                 "both: a part's line that is no field and follows its fields makes the library give up on the multipart, served as one text part (Simplified); Dovecot reads the line into the part's header and the part as empty",
	{"part-no-blank-line", "BODY.PEEK[1]"}:                                  "as BODYSTRUCTURE",
	{"part-no-blank-line", "BODY.PEEK[1]<0.100>"}:                           "as BODYSTRUCTURE",
	{"part-no-blank-line", "BODY.PEEK[1.MIME]"}:                             "as BODYSTRUCTURE",
	{"nested-no-boundary", "BODYSTRUCTURE"}:                                 "both: a multipart without a boundary inside another makes the whole one text part (Simplified), where Dovecot keeps the outer parts and shows the inner one empty",
	{"nested-no-boundary", "BODY.PEEK[1]"}:                                  "as BODYSTRUCTURE",
	{"nested-no-boundary", "BODY.PEEK[1]<0.100>"}:                           "as BODYSTRUCTURE",
	{"boundary-in-preamble", "BINARY.PEEK[1]"}:                              "as BODYSTRUCTURE",
	{"boundary-in-preamble", "BINARY.SIZE[1]"}:                              "as BODYSTRUCTURE",
	{"boundary-prefix", "BINARY.PEEK[1]"}:                                   "as BODY.PEEK[1]",
	{"boundary-prefix", "BINARY.SIZE[1]"}:                                   "as BODY.PEEK[1]",
	{"cut-bare-lf", "BINARY.PEEK[2]"}:                                       "as BODYSTRUCTURE",
	{"cut-bare-lf", "BINARY.SIZE[2]"}:                                       "as BODYSTRUCTURE",
	{"empty-multipart", "BINARY.PEEK[1]"}:                                   "as BODYSTRUCTURE",
	{"empty-multipart", "BINARY.SIZE[1]"}:                                   "as BODYSTRUCTURE",
	{"empty-parts", "BINARY.PEEK[1]"}:                                       "as BODYSTRUCTURE",
	{"empty-parts", "BINARY.SIZE[1]"}:                                       "as BODYSTRUCTURE",
	{"nested-broken-header", "BODY.PEEK[2.HEADER.FIELDS.NOT (SUBJECT)]"}:    "both: a line that is no field is left out of HEADER.FIELDS.NOT, as of the message's own header (mimeform.Lenient); Dovecot keeps it",
	{"nested-no-body", "BINARY.PEEK[1]"}:                                    "as BODYSTRUCTURE",
	{"nested-no-body", "BINARY.SIZE[1]"}:                                    "as BODYSTRUCTURE",
	{"nested-no-body", "BODY.PEEK[1.HEADER.FIELDS (SUBJECT CONTENT-TYPE)]"}: "both: the fields end with a blank line, as every HEADER.FIELDS answer; Dovecot ends them with none where the header has none",
	{"nested-no-body", "BODY.PEEK[1.HEADER.FIELDS.NOT (SUBJECT)]"}:          "cspool right: Dovecot takes the closing delimiter line after the header for one of its lines",
	{"nested-no-boundary", "BINARY.PEEK[1]"}:                                "as BODYSTRUCTURE",
	{"nested-no-boundary", "BINARY.SIZE[1]"}:                                "as BODYSTRUCTURE",
	{"part-no-blank-line", "BINARY.PEEK[1]"}:                                "as BODYSTRUCTURE",
	{"part-no-blank-line", "BINARY.SIZE[1]"}:                                "as BODYSTRUCTURE",
	{"header-8bit", "ENVELOPE"}:                                             "both: 8-bit text in UTF-8 and Latin-1 as the odd messages' utf8-header and latin1-header",
	// Mail as real software writes it (docs/IMAP.md, "Odd messages, part
	// by part").
	{"appledouble", "BODYSTRUCTURE"}:                                          "both: parameters written by name, Dovecot in the field's order (as the odd messages' type parameters)",
	{"dsn", "BODYSTRUCTURE"}:                                                  "as appledouble",
	{"dsn-headers", "BODYSTRUCTURE"}:                                          "as appledouble",
	{"pgp-encrypted", "BODYSTRUCTURE"}:                                        "as appledouble",
	{"smime-enveloped", "BODYSTRUCTURE"}:                                      "as appledouble",
	{"smime-signed", "BODYSTRUCTURE"}:                                         "as appledouble",
	{"tnef", "BODYSTRUCTURE"}:                                                 "as appledouble",
	{"appledouble", "BINARY.PEEK[2]"}:                                         "cspool right: BINARY of a multipart is its bytes, which have no transfer encoding to undo (RFC 2045 section 6.4); Dovecot decodes each part inside it and writes its header again with Content-Transfer-Encoding: binary",
	{"appledouble", "BINARY.SIZE[2]"}:                                         "as BINARY.PEEK[2]",
	{"calendar", "BINARY.SIZE[1]"}:                                            "cspool right: the size of BINARY[1], which both serve alike (509 bytes); Dovecot's BINARY.SIZE of that multipart (495) is not the size of its own BINARY",
	{"global-bounce", "BODYSTRUCTURE"}:                                        "as appledouble; the message/global part is a basic part, as Dovecot 2.3 writes it, to a session that has not enabled IMAP4rev2 (RFC 3501's grammar has MESSAGE RFC822 alone for a message part; TestGlobalPartRev1)",
	{"rfc822-no-header", "BODYSTRUCTURE"}:                                     "cspool right: the line break before the delimiter is the delimiter's (as nested-no-body), 37 bytes and 2 lines (Dovecot 39 and 3); the header of no field is the whole message, its text empty, as both read it",
	{"rfc822-no-header", "BODY.PEEK[2]"}:                                      "as BODYSTRUCTURE",
	{"rfc822-no-header", "BODY.PEEK[2]<0.100>"}:                               "as BODYSTRUCTURE",
	{"rfc822-no-header", "BINARY.PEEK[2]"}:                                    "as BODYSTRUCTURE",
	{"rfc822-no-header", "BINARY.SIZE[2]"}:                                    "as BODYSTRUCTURE",
	{"rfc822-no-header", "BODY.PEEK[2.HEADER.FIELDS.NOT (SUBJECT)]"}:          "both: a line that is no field is left out, as nested-broken-header's, here every line; Dovecot keeps them",
	{"rfc822-no-header-top", "BODY.PEEK[1.HEADER.FIELDS.NOT (SUBJECT)]"}:      "as rfc822-no-header",
	{"rfc822-no-header", "BODY.PEEK[2.HEADER.FIELDS (SUBJECT CONTENT-TYPE)]"}: "both: a header of no field and no blank line gives HEADER.FIELDS no blank line either, as rfc822-base64 of the odd messages (RFC 3501 section 6.4.5: none for a message of no body and no blank line); Dovecot counts the delimiter's line break into the part, and so ends its answer with one",
}

// quoteLiterals returns d with each literal outside a section's data
// that holds printable ASCII written as a quoted string, as cspool writes
// it: Dovecot writes a display name with a quote in it as a literal.
func quoteLiterals(d string) string { return rewriteLiterals(d, true) }

// sexp is an IMAP answer's value: an atom, a string (quoted or literal)
// or a list.
type sexp struct {
	atom   string
	list   []sexp
	isList bool
	str    bool // atom is a string's text, quoted or literal
}

// parseSexp reads one value from s and returns it and the rest.
func parseSexp(s string) (sexp, string, error) {
	s = strings.TrimLeft(s, " ")
	if s == "" {
		return sexp{}, "", fmt.Errorf("no value")
	}
	switch s[0] {
	case '(':
		v := sexp{isList: true}
		s = s[1:]
		for {
			s = strings.TrimLeft(s, " ")
			if s == "" {
				return sexp{}, "", fmt.Errorf("unclosed list")
			}
			if s[0] == ')' {
				return v, s[1:], nil
			}
			e, rest, err := parseSexp(s)
			if err != nil {
				return sexp{}, "", err
			}
			v.list = append(v.list, e)
			s = rest
		}
	case '"':
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
				if i < len(s) {
					b.WriteByte(s[i])
				}
			case '"':
				return sexp{atom: b.String(), str: true}, s[i+1:], nil
			default:
				b.WriteByte(s[i])
			}
		}
		return sexp{}, "", fmt.Errorf("unclosed string")
	case '{', '~':
		loc := literal.FindStringSubmatchIndex(s)
		if loc == nil || loc[0] > 1 {
			return sexp{}, "", fmt.Errorf("bad literal %.20q", s)
		}
		n, _ := strconv.Atoi(s[loc[2]:loc[3]])
		if loc[1]+n > len(s) {
			return sexp{}, "", fmt.Errorf("short literal")
		}
		return sexp{atom: s[loc[1] : loc[1]+n], str: true}, s[loc[1]+n:], nil
	}
	i := strings.IndexAny(s, " ()")
	if i < 0 {
		i = len(s)
	}
	return sexp{atom: s[:i]}, s[i:], nil
}

// structureParts lists the part specifiers of a BODYSTRUCTURE answer, in
// order, as RFC 3501 section 6.4.5 numbers them.
func structureParts(answer string) ([]string, error) {
	v, _, err := parseSexp(strings.TrimPrefix(answer, "BODYSTRUCTURE "))
	if err != nil {
		return nil, err
	}
	var parts []string
	var walk func(b sexp, prefix string, top bool)
	walk = func(b sexp, prefix string, top bool) {
		if !b.isList || len(b.list) == 0 {
			return
		}
		join := func(n int) string {
			if prefix == "" {
				return strconv.Itoa(n)
			}
			return prefix + "." + strconv.Itoa(n)
		}
		if b.list[0].isList {
			for i, c := range b.list {
				if !c.isList {
					break
				}
				p := join(i + 1)
				parts = append(parts, p)
				walk(c, p, false)
			}
			return
		}
		if top {
			// A message of one part: its body is part 1.
			parts = append(parts, "1")
		}
		if len(b.list) > 8 && strings.EqualFold(b.list[0].atom, "message") && strings.EqualFold(b.list[1].atom, "rfc822") {
			inner := b.list[8]
			if len(inner.list) > 0 && !inner.list[0].isList {
				parts = append(parts, join(1))
				return
			}
			walk(inner, prefix, false)
		}
	}
	walk(v, "", true)
	return parts, nil
}

// fetchOddParts fetches oddPartsItems of every message and partItems of
// every part its structure lists, one FETCH each, from a connection with
// INBOX selected holding the messages in order.
func fetchOddParts(t *testing.T, w *wire, ms []oddMessage) map[[2]string]string {
	t.Helper()
	got := map[[2]string]string{}
	fetch := func(seq int, name, item string) {
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
			got[[2]string{name, item}] = status(tagged)
		case len(fetches) != 1:
			t.Fatalf("%s %s: %d FETCH responses: %q", name, item, len(fetches), u)
		default:
			got[[2]string{name, item}] = fetches[0]
		}
	}
	for i, m := range ms {
		for _, item := range oddPartsItems {
			fetch(i+1, m.name, item)
		}
		parts, err := structureParts(got[[2]string{m.name, "BODYSTRUCTURE"}])
		if err != nil {
			t.Fatalf("%s: reading the structure: %v", m.name, err)
		}
		for _, p := range parts {
			for _, f := range partItems {
				fetch(i+1, m.name, fmt.Sprintf(f, p))
			}
		}
	}
	return got
}

// oddPartsRecord reads a file of answers, after writing got into it
// first under CSPOOL_ODD_RECORD=1 when got is not nil: one line a message
// and item, `name item "answer"`, the answer a Go string literal.
func oddPartsRecord(t *testing.T, file string, got map[[2]string]string) map[[2]string]string {
	t.Helper()
	return partsRecord(t, filepath.Join("testdata", "oddparts", file), got)
}

// partsRecord is oddPartsRecord of the file at path.
func partsRecord(t *testing.T, path string, got map[[2]string]string) map[[2]string]string {
	t.Helper()
	if got != nil && os.Getenv("CSPOOL_ODD_RECORD") == "1" {
		keys := make([][2]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b [2]string) int {
			if c := strings.Compare(a[0], b[0]); c != 0 {
				return c
			}
			return strings.Compare(a[1], b[1])
		})
		var b bytes.Buffer
		for _, k := range keys {
			fmt.Fprintf(&b, "%s\t%s\t%s\n", k[0], k[1], strconv.Quote(got[k]))
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
	return readRecorded(t, path)
}

// compareOddParts fails for each answer that is not the recorded one, and
// for each recorded answer not given.
func compareOddParts(t *testing.T, who string, got, rec map[[2]string]string) {
	t.Helper()
	for k, want := range rec {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s %s %s: recorded, not fetched (the structure changed?)", who, k[0], k[1])
		case g != want:
			t.Errorf("%s %s %s:\n got  %q\n want %q", who, k[0], k[1], g, want)
		}
	}
	for k := range got {
		if _, ok := rec[k]; !ok {
			t.Errorf("%s %s %s: fetched, not recorded", who, k[0], k[1])
		}
	}
}

// appendOddParts appends the messages to INBOX (the same bytes to either
// server; none holds a NUL, which Dovecot takes in a literal8 only), and
// selects it.
func appendOddParts(w *wire, ms []oddMessage) {
	for _, m := range ms {
		w.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(m.raw), m.raw))
	}
	w.ok("SELECT INBOX")
}

// TestOddPartsRead appends the odd multiparts to a device and reads them
// part by part: every answer is the one recorded in cspool.txt, where it
// is not Dovecot's (dovecot.txt) the difference is one decided on in
// oddPartsDifferences, and BODY[] is the appended bytes.
func TestOddPartsRead(t *testing.T) {
	t.Parallel()
	ms := corpus(t, "oddparts")
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	appendOddParts(w, ms)
	got := fetchOddParts(t, w, ms)

	for i, m := range ms {
		u := w.ok(fmt.Sprintf("FETCH %d (BODY.PEEK[])", i+1))
		want := fmt.Sprintf("* %d FETCH (BODY[] {%d}\r\n%s)\r\n", i+1, len(m.raw), m.raw)
		if len(u) != 1 || u[0] != want {
			t.Errorf("%s: BODY[] is not the appended bytes: %q", m.name, u)
		}
	}

	rec := oddPartsRecord(t, "cspool.txt", got)
	compareOddParts(t, "cspool", got, rec)
	dove := oddPartsRecord(t, "dovecot.txt", nil)
	if os.Getenv("CSPOOL_ODD_RECORD") == "1" {
		return
	}
	compareWithDovecot(t, got, dove, "oddPartsDifferences", oddPartsDifferences)
}

// compareWithDovecot fails for each answer in got that is not Dovecot's
// (dove) with no decision in differences (named name), for each decision
// on one that is Dovecot's, and for each decision on no answer in got.
func compareWithDovecot(t *testing.T, got, dove map[[2]string]string, name string, differences map[[2]string]string) {
	t.Helper()
	keys := make([][2]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	for _, k := range keys {
		dv, ok := dove[k]
		if !ok {
			// A part Dovecot does not list: its BODYSTRUCTURE differs.
			if _, decided := differences[[2]string{k[0], "BODYSTRUCTURE"}]; !decided {
				t.Errorf("%s %s: a part Dovecot does not list, with no decision on the structure", k[0], k[1])
			}
			continue
		}
		_, decided := differences[k]
		same := oddSameForm(strings.SplitN(k[1], "[", 2)[0], got[k], quoteLiterals(dv))
		switch {
		case !same && !decided:
			t.Errorf("%s %s differs from Dovecot's answer, with no decision in %s:\n cspool  %q\n dovecot %q", k[0], k[1], name, got[k], dv)
		case same && decided:
			t.Errorf("%s %s: %s has a decision, but the answer is Dovecot's now: %q", k[0], k[1], name, got[k])
		}
	}
	for k := range differences {
		if _, ok := got[k]; !ok {
			t.Errorf("%s names %s %s, which is no message and item fetched", name, k[0], k[1])
		}
	}
}

// TestOddPartsDovecot appends the odd multiparts to a private Dovecot and
// checks its answers are the ones recorded in dovecot.txt, which
// TestOddPartsRead compares cspool's with. It skips when Dovecot is not
// installed, outside CI.
func TestOddPartsDovecot(t *testing.T) {
	t.Parallel()
	ms := corpus(t, "oddparts")
	w := dovecotWire(t)
	appendOddParts(w, ms)
	got := fetchOddParts(t, w, ms)
	rec := oddPartsRecord(t, "dovecot.txt", got)
	compareOddParts(t, "dovecot", got, rec)
	w.ok("LOGOUT")
}

// TestCutShortStreamed: a message over 256 KiB, whose sections are
// streamed, with a multipart cut short: its last part is served with its
// last line break, as the structure counts it and as a small message's
// is (the streamed reading gives up on it at the end of the data, and
// leaves it to bodySection), not without it.
func TestCutShortStreamed(t *testing.T) {
	t.Parallel()
	line := strings.Repeat("x", 76) + "\r\n"
	big := strings.Repeat(line, (300<<10)/len(line))
	msg := "From: ann@example.org\r\nSubject: cut short, large\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\n" + big + "--b1\r\nContent-Type: text/plain\r\n\r\nlast, cut short\r\n"
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	w.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(msg), msg))
	w.ok("SELECT INBOX")
	u := w.ok("FETCH 1 (BODYSTRUCTURE)")
	if len(u) != 1 || !strings.Contains(u[0], `"7bit" 17 1 NIL NIL NIL NIL) "mixed"`) {
		t.Errorf("structure: %q, want part 2 of 17 bytes and a line", u)
	}
	for _, c := range []struct{ cmd, want string }{
		{"FETCH 1 (BODY.PEEK[2])", "* 1 FETCH (BODY[2] {17}\r\nlast, cut short\r\n)\r\n"},
		{"FETCH 1 (BINARY.PEEK[2])", "* 1 FETCH (BINARY[2] ~{17}\r\nlast, cut short\r\n)\r\n"},
		{"FETCH 1 (BODY.PEEK[2]<5.100>)", "* 1 FETCH (BODY[2]<5> {12}\r\n cut short\r\n)\r\n"},
	} {
		if u := w.ok(c.cmd); len(u) != 1 || u[0] != c.want {
			t.Errorf("%s:\n got  %q\n want %q", c.cmd, u, c.want)
		}
	}
	u = w.ok("FETCH 1 (BODY.PEEK[1])")
	if want := fmt.Sprintf("* 1 FETCH (BODY[1] {%d}\r\n%s)\r\n", len(big)-2, big[:len(big)-2]); len(u) != 1 || u[0] != want {
		t.Errorf("BODY[1] of %d bytes is not the part's", len(big)-2)
	}
}

// TestForwardedNoFieldRead: a forwarded message none of whose header
// lines is a field is a header of no field, up to the part's end: its
// BODY[2.1] and BINARY[2.1] are its BODY[2.TEXT], empty, as the structure
// counts its body (0 bytes and lines) and as Dovecot serves it, in a small
// message and in one over 256 KiB, whose sections are streamed. The
// library took the first line for the header and served the rest.
func TestForwardedNoFieldRead(t *testing.T) {
	t.Parallel()
	line := strings.Repeat("x", 76) + "\r\n"
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	for _, first := range []string{"small\r\n", strings.Repeat(line, (300<<10)/len(line))} {
		msg := "From: ann@example.org\r\nSubject: no field\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n" + first +
			"--b1\r\nContent-Type: message/rfc822\r\n\r\nnot a header\r\nnor this\r\n--b1--\r\n"
		w.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(msg), msg))
	}
	w.ok("SELECT INBOX")
	for seq := 1; seq <= 2; seq++ {
		u := w.ok(fmt.Sprintf("FETCH %d (BODYSTRUCTURE)", seq))
		if len(u) != 1 || !strings.Contains(u[0], `NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 1 NIL`) {
			t.Errorf("message %d: structure %q, want the forwarded body of 0 bytes and lines", seq, u)
		}
		for _, c := range []struct{ item, want string }{
			{"BODY.PEEK[2.1]", "BODY[2.1] {0}\r\n"},
			{"BODY.PEEK[2.1]<0.5>", "BODY[2.1]<0> {0}\r\n"},
			{"BINARY.PEEK[2.1]", "BINARY[2.1] ~{0}\r\n"},
			{"BINARY.SIZE[2.1]", "BINARY.SIZE[2.1] 0"},
			{"BODY.PEEK[2.TEXT]", "BODY[2.TEXT] {0}\r\n"},
			{"BODY.PEEK[2.HEADER]", "BODY[2.HEADER] {22}\r\nnot a header\r\nnor this"},
		} {
			want := fmt.Sprintf("* %d FETCH (%s)\r\n", seq, c.want)
			if u := w.ok(fmt.Sprintf("FETCH %d (%s)", seq, c.item)); len(u) != 1 || u[0] != want {
				t.Errorf("message %d %s:\n got  %q\n want %q", seq, c.item, u, want)
			}
		}
	}
}
