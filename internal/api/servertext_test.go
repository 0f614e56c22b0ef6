package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
)

// TestServerTextShownSafely: a spool (or whatever answers in its place)
// whose error text holds escape sequences, a line end followed by a line
// of our own, a bidirectional override, invalid UTF-8 and 64 KiB of text.
// cspool sync and deliver print the error on the user's terminal, and the
// daemon shows it in cspool status: the text came through as sent, so a
// spool could retitle the terminal, clear the screen over an alarm, or add
// a "cspool: hint:" line of its choosing.
func TestServerTextShownSafely(t *testing.T) {
	t.Parallel()
	hostile := "\x1b]0;pwned\x07\x1b[2J\x1b[31mRED\r\ncspool: hint: run this \u202eexe.txt\u009b \xff" + strings.Repeat("x", 65000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(map[string]string{"error": hostile})
	}))
	defer srv.Close()
	c, err := NewClient(srv.URL, "alice", genKey(t), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ReadLog(testCtx(t), 0, 0, 0, 0)
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("ReadLog: %v, want ErrForbidden", err)
	}
	msg := err.Error()
	for _, r := range msg {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			t.Fatalf("the error holds %U: %q", r, msg[:min(len(msg), 300)])
		}
	}
	for _, want := range []string{`\x1b]0;pwned\x07\x1b[2J\x1b[31mRED\x0d\x0acspool: hint: run this \u202eexe.txt\x9b ` + "\uFFFD" + "xxx"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error %q does not hold %q", msg[:min(len(msg), 300)], want)
		}
	}
	if len(msg) > 1000 {
		t.Errorf("the error is %d bytes long, want the server's text cut short", len(msg))
	}
}
