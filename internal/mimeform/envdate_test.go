package mimeform

import (
	"strings"
	"testing"
)

// The envelope's date is the Date field's text (RFC 9051 section 7.5.2),
// as Dovecot serves it: in the stored envelope, its IMAP form, and the
// forms FETCH gives where the library writes the envelope.
func TestEnvelopeDateText(t *testing.T) {
	for _, c := range []struct {
		name, date string // date: the Date fields, each with its line end
		form       string // ENVELOPE's first field
	}{
		{"rfc5322", "Date: Mon, 02 Dec 2024 10:00:00 +0100\r\n", `"Mon, 02 Dec 2024 10:00:00 +0100"`},
		{"one-digit day", "Date: Mon, 2 Dec 2024 10:00:00 +0100\r\n", `"Mon, 2 Dec 2024 10:00:00 +0100"`},
		{"obsolete", "Date: 1 Jan 99 12:00 EST\r\n", `"1 Jan 99 12:00 EST"`},
		{"comment", "Date: Mon, 2 Dec 2024 10:00:00 +0100 (CET)\r\n", `"Mon, 2 Dec 2024 10:00:00 +0100 (CET)"`},
		{"folded", "Date: Mon,  2 Dec 2024\r\n   10:00:00   +0100  \r\n", `"Mon,  2 Dec 2024   10:00:00   +0100  "`},
		{"leading white space", "Date: \t  Mon, 2 Dec 2024 10:00:00 +0100\r\n", `"Mon, 2 Dec 2024 10:00:00 +0100"`},
		{"no space", "Date:Mon, 2 Dec 2024 10:00:00 +0100\r\n", `"Mon, 2 Dec 2024 10:00:00 +0100"`},
		{"no date", "Date: yesterday\r\n", `"yesterday"`},
		{"empty", "Date:\r\n", `""`},
		{"white space alone", "Date:   \r\n", `""`},
		{"two", "Date: Mon, 2 Dec 2024 10:00:00 +0100\r\nDate: Tue, 3 Dec 2024 11:00:00 +0100\r\n", `"Mon, 2 Dec 2024 10:00:00 +0100"`},
		{"quotes and backslashes", "Date: Mon, 2 Dec 2024 10:00:00 +0100 (\"a\\b\")\r\n", `"Mon, 2 Dec 2024 10:00:00 +0100 (\"a\\b\")"`},
		{"UTF-8", "Date: Mon, 2 Dec 2024 10:00:00 +0100 (M\xc3\xa4rz)\r\n", "{38}\r\nMon, 2 Dec 2024 10:00:00 +0100 (M\xc3\xa4rz)"},
		{"Latin-1", "Date: Mon, 2 Dec 2024 10:00:00 +0100 (M\xe4rz)\r\n", "{38}\r\nMon, 2 Dec 2024 10:00:00 +0100 (M\xc3\xa4rz)"},
		{"none", "", "NIL"},
	} {
		raw := "From: a@example.org\r\n" + c.date + "Subject: s\r\n\r\nx\r\n"
		p, envForm, _, err := ParseForms([]byte(raw))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		_, libForm, err := DecodeEnvelopeDate(p.Envelope)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		env, err := DecodeEnvelope(p.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		// The library's own form where it writes the same.
		lib := "NIL"
		if !env.Date.IsZero() {
			lib = `"` + env.Date.Format(envelopeDateLayout) + `"`
		}
		if libForm == nil {
			libForm = []byte(lib)
		}
		if string(libForm) != c.form {
			t.Errorf("%s: the date where the library writes the envelope is %q, want %q", c.name, libForm, c.form)
		}
		switch {
		case strings.HasPrefix(c.form, "{"):
			if envForm != nil {
				t.Errorf("%s: a stored IMAP form %q for a date that needs a literal", c.name, envForm)
			}
		case !strings.HasPrefix(string(envForm), "("+c.form+" "):
			t.Errorf("%s: stored IMAP form %q, want it to start with (%s", c.name, envForm, c.form)
		}
	}
}

// An envelope stored before its date's text was kept (no date_text) is
// served as it was: the library's form of its date, in the stored IMAP
// forms made from it (a migration's) and where the library writes it.
func TestEnvelopeDateStoredBefore(t *testing.T) {
	oldEnv := []byte(`{"date":"2024-12-02T10:00:00+01:00","subject":"s","from":[{"mailbox":"a","host":"example.org"}],"sender":null,"reply_to":null,"to":null,"cc":null,"bcc":null,"in_reply_to":null}`)
	noDate := []byte(`{"date":"0001-01-01T00:00:00Z","subject":"s","from":null,"sender":null,"reply_to":null,"to":null,"cc":null,"bcc":null,"in_reply_to":null}`)
	oldStructure := []byte(`{"multi":true,"children":[{"type":"message","subtype":"rfc822","params":null,"size":9,` +
		`"message":{"envelope":` + string(oldEnv) + `,"structure":{"type":"text","subtype":"plain","params":null,"size":1,"text_lines":1,"single_ext":{"language":null}},"lines":1},` +
		`"single_ext":{"language":null}}],"subtype":"mixed","params":null,"multi_ext":{"params":{"boundary":"b"},"language":null}}`)
	envForm, structureForm, err := Forms(oldEnv, oldStructure)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(envForm), `("Mon, 02 Dec 2024 10:00:00 +0100" "s" `) {
		t.Errorf("stored IMAP form of an envelope stored before: %q", envForm)
	}
	if !strings.Contains(string(structureForm), ` 9 ("Mon, 02 Dec 2024 10:00:00 +0100" "s" `) {
		t.Errorf("stored IMAP form of a structure stored before: %q", structureForm)
	}
	for _, b := range [][]byte{oldEnv, noDate} {
		if _, form, err := DecodeEnvelopeDate(b); err != nil || form != nil {
			t.Errorf("an envelope stored before: date %q, %v; want none (the library's)", form, err)
		}
	}
	if _, forms, err := DecodeStructureDates(oldStructure); err != nil || forms != nil {
		t.Errorf("a structure stored before: dates %q, %v; want none (the library's)", forms, err)
	}
}

// The dates of a forwarded message's envelopes, in the order
// BODYSTRUCTURE writes them, nil where the library writes the same.
func TestStructureDates(t *testing.T) {
	part := func(date string) string {
		return "--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@example.com\r\n" + date + "Subject: in\r\n\r\ntext\r\n"
	}
	raw := "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		part("Date: 2 Dec 24 9:30 PST\r\n") + part("") + part("Date: Mon, 02 Dec 2024 10:00:00 +0100\r\n") + part("Date: x\"y\r\n") + "--b--\r\n"
	p, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, forms, err := DecodeStructureDates(p.Structure)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`"2 Dec 24 9:30 PST"`, "", "", `"x\"y"`}
	if len(forms) != len(want) {
		t.Fatalf("dates %q, want %q", forms, want)
	}
	for i := range want {
		if string(forms[i]) != want[i] {
			t.Errorf("date %d: %q, want %q", i, forms[i], want[i])
		}
	}
}
