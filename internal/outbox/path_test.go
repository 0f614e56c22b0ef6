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
