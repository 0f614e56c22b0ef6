package main

import (
	"strings"
	"testing"
)

// mainCFSettings reads main.cf text as Postfix does: comments and blank
// lines dropped, a line starting with a blank continuing the one before,
// blanks collapsed; name to value.
func mainCFSettings(t *testing.T, text string) map[string]string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#"):
		case (l[0] == ' ' || l[0] == '\t') && len(lines) > 0:
			lines[len(lines)-1] += " " + strings.TrimSpace(l)
		default:
			lines = append(lines, l)
		}
	}
	settings := map[string]string{}
	for _, l := range lines {
		name, value, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("main.cf line %q: no name = value", l)
		}
		settings[strings.TrimSpace(name)] = strings.Join(strings.Fields(value), " ")
	}
	return settings
}

// TestDeliveryVerifyBlock holds docs/DELIVERY.md's address verification
// block ("A virtual domain", the alternative to the recipients' list),
// which no Postfix of the tests runs, to docs/POSTFIX.md's main.cf, which
// TestPostfix runs as printed: each of its settings is there, with the
// same value.
func TestDeliveryVerifyBlock(t *testing.T) {
	t.Parallel()
	virtual := deliveryDocSections(t)("### A virtual domain")
	var verify string
	for _, b := range virtual {
		if strings.Contains(b, "reject_unverified_recipient") {
			verify = b
		}
	}
	if verify == "" {
		t.Fatalf("docs/DELIVERY.md, A virtual domain: no block with reject_unverified_recipient in %q", virtual)
	}
	mainCF, _ := postfixRecipe(t)
	tested := mainCFSettings(t, mainCF)
	got := mainCFSettings(t, verify)
	if len(got) < 4 {
		t.Fatalf("docs/DELIVERY.md's verification block: %d settings read, want its four or more: %q", len(got), got)
	}
	for name, value := range got {
		if tested[name] != value {
			t.Errorf("docs/DELIVERY.md's verification block: %s = %s; docs/POSTFIX.md's main.cf, which TestPostfix runs, has %q", name, value, tested[name])
		}
	}
}
