package imapd

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The envelope-date messages (testdata/envdate/*.eml) hold Date fields
// of every form: RFC 5322's, obsolete ones (a two-digit year, a zone
// name, comments, no weekday, folded, extra white space), one that is no
// date, empty ones, two of them, 8-bit bytes, quotes and backslashes, none,
// and dates of forwarded messages. RFC 9051 section 7.5.2 makes an
// envelope's date the Date field's text, an nstring, NIL only when there
// is no Date field; Dovecot 2.3.19 serves it so. Their answers are
// recorded in testdata/envdate/cspool.txt and dovecot.txt
// (docs/IMAP.md, "Envelope dates"); CSPOOL_ODD_RECORD=1 writes the files
// from the answers instead of comparing.

// envDateItems are fetched one at a time: ENVELOPE and BODYSTRUCTURE
// alone (the IMAP forms stored at apply time) and beside a header
// section (written through the library).
var envDateItems = []string{"ENVELOPE", "ENVELOPE BODY.PEEK[HEADER.FIELDS (X-NONE)]",
	"BODYSTRUCTURE", "BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (X-NONE)]"}

// envDateDifferences are the answers whose envelope dates are not
// Dovecot's, each with the decision taken (docs/IMAP.md, "Envelope
// dates"). One that differs and is not here fails TestEnvelopeDates, and
// so does one here that no longer differs.
var envDateDifferences = map[[2]string]string{
	{"two-dates", "ENVELOPE"}:                                          "both: RFC 5322 allows one Date field; cspool takes the first, as it takes the first Subject and Message-ID and as SENTBEFORE and the rest read the date (the odd messages' multiple-fields); Dovecot the last",
	{"two-dates", "ENVELOPE BODY.PEEK[HEADER.FIELDS (X-NONE)]"}:        "as ENVELOPE",
	{"empty-then-date", "ENVELOPE"}:                                    "as two-dates: the first is empty",
	{"empty-then-date", "ENVELOPE BODY.PEEK[HEADER.FIELDS (X-NONE)]"}:  "as ENVELOPE",
	{"eight-bit-latin1", "ENVELOPE"}:                                   "both: 8-bit text that is not UTF-8 is read as windows-1252 and written as UTF-8, as the subject's (the odd messages' latin1-header); Dovecot the bytes",
	{"eight-bit-latin1", "ENVELOPE BODY.PEEK[HEADER.FIELDS (X-NONE)]"}: "as ENVELOPE",
}

// answerEnvDates returns the dates of the envelopes in a FETCH answer:
// ENVELOPE's, and those of the message/rfc822 parts in BODYSTRUCTURE, in
// order, each as `"text"` or NIL.
func answerEnvDates(answer string) ([]string, error) {
	var items []sexp
	for rest := strings.TrimLeft(answer, " "); rest != ""; rest = strings.TrimLeft(rest, " ") {
		if i := strings.IndexByte(rest, '['); i >= 0 && i < strings.IndexAny(rest+" ", " (") {
			// A section name (BODY[HEADER.FIELDS (X-NONE)]): an atom to its ']'.
			j := strings.IndexByte(rest, ']')
			if j < 0 {
				return nil, fmt.Errorf("section name not closed")
			}
			items, rest = append(items, sexp{atom: rest[:j+1]}), rest[j+1:]
			continue
		}
		v, r, err := parseSexp(rest)
		if err != nil {
			return nil, err
		}
		items, rest = append(items, v), r
	}
	var dates []string
	date := func(env sexp) {
		switch {
		case !env.isList || len(env.list) == 0:
			dates = append(dates, "not an envelope")
		case !env.list[0].str && env.list[0].atom == "NIL":
			dates = append(dates, "NIL")
		default:
			dates = append(dates, strconv.Quote(env.list[0].atom))
		}
	}
	var walk func(bs sexp)
	walk = func(bs sexp) {
		if !bs.isList || len(bs.list) == 0 {
			return
		}
		if bs.list[0].isList { // a multipart
			for _, c := range bs.list {
				walk(c)
			}
			return
		}
		if len(bs.list) > 9 && strings.EqualFold(bs.list[0].atom, "message") && strings.EqualFold(bs.list[1].atom, "rfc822") {
			date(bs.list[7])
			walk(bs.list[8])
		}
	}
	for i := 0; i+1 < len(items); i += 2 {
		switch items[i].atom {
		case "ENVELOPE":
			date(items[i+1])
		case "BODYSTRUCTURE":
			walk(items[i+1])
		}
	}
	return dates, nil
}

// TestEnvelopeDates delivers the envelope-date messages to a device and
// fetches envDateItems of each: every answer is the one recorded in
// cspool.txt, and the date of every envelope in it is Dovecot's (in
// dovecot.txt), the Date field's text.
func TestEnvelopeDates(t *testing.T) {
	t.Parallel()
	ms := corpus(t, "envdate")
	w := deliveredWire(t, ms)
	got := fetchItems(t, w, ms, envDateItems)
	rec := itemsRecord(t, "envdate", "cspool.txt", ms, envDateItems, got)
	compareItems(t, "cspool", ms, envDateItems, got, rec)
	if os.Getenv("CSPOOL_ODD_RECORD") == "1" {
		return
	}
	dove := itemsRecord(t, "envdate", "dovecot.txt", ms, envDateItems, nil)
	for _, m := range ms {
		for _, item := range envDateItems {
			k := [2]string{m.name, item}
			cd, err := answerEnvDates(got[k])
			if err != nil {
				t.Fatalf("%s %s: cspool's answer does not parse: %v: %q", m.name, item, err, got[k])
			}
			dd, err := answerEnvDates(dove[k])
			if err != nil {
				t.Fatalf("%s %s: Dovecot's answer does not parse: %v: %q", m.name, item, err, dove[k])
			}
			_, decided := envDateDifferences[k]
			switch same := slices.Equal(cd, dd); {
			case !same && !decided:
				t.Errorf("%s %s: envelope dates differ from Dovecot's, with no decision in envDateDifferences:\n cspool  %q\n dovecot %q", m.name, item, cd, dd)
			case same && decided:
				t.Errorf("%s %s: envDateDifferences has a decision, but the dates are Dovecot's now: %q", m.name, item, cd)
			}
		}
	}
}

// TestEnvelopeDatesImaplib: Python's imaplib reads the envelope dates of
// the envelope-date messages, from the stored forms and from the library,
// as the record has them: quoted, escaped, in a literal, or NIL.
func TestEnvelopeDatesImaplib(t *testing.T) {
	t.Parallel()
	python := needTool(t, "python3")
	ms := corpus(t, "envdate")
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for _, m := range ms {
		pos = r.Deliver(m.raw)
	}
	d.synced(pos)
	rec := itemsRecord(t, "envdate", "cspool.txt", ms, envDateItems, nil)
	host, port, _ := net.SplitHostPort(d.addr)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "testdata/imaplib_envdate.py", host, port, "alice", testPassword, strconv.Itoa(len(ms))).CombinedOutput()
	if err != nil {
		t.Fatalf("imaplib: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if lines[len(lines)-1] != "PASS" {
		t.Fatalf("imaplib did not pass:\n%s", out)
	}
	got := map[string]string{}
	for _, l := range lines[:len(lines)-1] {
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 {
			t.Fatalf("imaplib's line %q", l)
		}
		date := "NIL"
		if f[2] != "null" {
			var s string
			if err := json.Unmarshal([]byte(f[2]), &s); err != nil {
				t.Fatalf("imaplib's line %q: %v", l, err)
			}
			date = strconv.Quote(s)
		}
		got[f[0]+" "+f[1]] = date
	}
	for i, m := range ms {
		for path, item := range map[string]string{"direct": envDateItems[0], "library": envDateItems[1]} {
			want, err := answerEnvDates(rec[[2]string{m.name, item}])
			if err != nil || len(want) != 1 {
				t.Fatalf("%s %s: recorded answer: %q, %v", m.name, item, want, err)
			}
			if g := got[fmt.Sprintf("%d %s", i+1, path)]; g != want[0] {
				t.Errorf("%s, %s: imaplib read the date %s, want %s", m.name, path, g, want[0])
			}
		}
	}
}

// TestEnvelopeDatesDovecot appends the envelope-date messages to a
// private Dovecot and checks its answers are the ones recorded in
// dovecot.txt. It skips when Dovecot is not installed, outside CI.
func TestEnvelopeDatesDovecot(t *testing.T) {
	t.Parallel()
	ms := corpus(t, "envdate")
	w := dovecotWire(t)
	appendOddParts(w, ms)
	got := fetchItems(t, w, ms, envDateItems)
	rec := itemsRecord(t, "envdate", "dovecot.txt", ms, envDateItems, got)
	compareItems(t, "dovecot", ms, envDateItems, got, rec)
	w.ok("LOGOUT")
}
