package outbox

import "testing"

// TestSMTPPath: a local part that is a dot-atom goes as it is; any other
// is quoted, with \ before " and \.
func TestSMTPPath(t *testing.T) {
	for in, want := range map[string]string{
		"bob@example.org":              "bob@example.org",
		"bob.smith+tag@example.org":    "bob.smith+tag@example.org",
		"jörg@example.org":             "jörg@example.org",
		"john doe@example.org":         `"john doe"@example.org`,
		"root> NOTIFY=NEVER@localhost": `"root> NOTIFY=NEVER"@localhost`,
		`a"b\c@example.org`:            `"a\"b\\c"@example.org`,
		"a@b@example.org":              `"a@b"@example.org`,
		".dot@example.org":             `".dot"@example.org`,
		"two..dots@example.org":        `"two..dots"@example.org`,
		"":                             "",
	} {
		if got := smtpPath(in); got != want {
			t.Errorf("smtpPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWithoutAddresses: every address a smarthost's reply quotes is left
// out of the log whole, a quoted local part with blanks too. Its words
// before the @ went to the log ("<alice+x <address>" for
// <"alice+x y"@localhost>).
func TestWithoutAddresses(t *testing.T) {
	for in, want := range map[string]string{
		"250 2.0.0 Ok: queued as 4F2":                         "250 2.0.0 Ok: queued as 4F2",
		"550 5.1.1 <bob@example.org>: Recipient rejected":     "550 5.1.1 <address> Recipient rejected",
		`250 2.0.0 <"alice+x y"@localhost> delivered`:         "250 2.0.0 <address> delivered",
		`550 5.1.1 <"a \" b"@example.org>: no such user`:      "550 5.1.1 <address> no such user",
		`550 5.1.1 <"john doe"@example.org>, "x y": no`:       `550 5.1.1 <address> "x y": no`,
		`550 "unterminated quote, ask postmaster@example.org`: `550 "unterminated quote, ask <address>`,
	} {
		if got := withoutAddresses(in); got != want {
			t.Errorf("withoutAddresses(%q) = %q, want %q", in, got, want)
		}
	}
}
