package statuspage

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"cspool/internal/syncer"
)

// TestSyncTruth: what the report, the text form and the page say about the
// sync in each state. Nothing that is not known now is shown as known: a
// device that cannot reach the spool, or never did, is not "up to date", and
// after a rollback the spool's head is shown where it is, below the
// position, with the alarm as the last error and what to do.
func TestSyncTruth(t *testing.T) {
	t.Parallel()
	now := time.Now()
	const url = "https://spool.example.org"
	const rollback = "the spool's head 8 is behind position 10, which this device already applied: the log was rolled back"
	cases := []struct {
		name       string
		st         syncer.Status
		state      string
		text       []string // in the text form
		page       []string // in the page
		action     string   // in Actions ("" = none)
		notInText  []string
		lastErrSet bool
	}{
		{"connecting", syncer.Status{Position: 42}, StateUnknown,
			[]string{"Sync:          connecting to the spool " + url + " (no answer yet)",
				"Position:      42 applied; the spool's head is unknown (no answer since the daemon started)"},
			[]string{`<span id="head" class="warn">unknown</span> (no answer since the daemon started)`, `<span id="lag" class="warn">unknown</span>`},
			"", []string{"up to date", "TO DO"}, false},
		{"unreachable", syncer.Status{Position: 42, Head: 42, SpoolHead: 42, LastContact: now.Add(-5 * time.Minute),
			DownSince: now.Add(-4 * time.Minute), LastError: "reading the log: dial tcp 192.0.2.1:3999: connection refused"}, StateUnknown,
			[]string{"Sync:          NOT CONNECTED: no answer from the spool " + url + " since ",
				"(4 min ago)", "Position:      42 applied; the spool's head is unknown now (42 at the last contact)",
				"Last contact:  ", "(5 min ago)", "Last error:    reading the log: dial tcp 192.0.2.1:3999: connection refused",
				"TO DO: Nothing yet: the daemon keeps trying by itself"},
			[]string{`<span id="connected" class="warn">NOT CONNECTED`, `<span id="head" class="warn">unknown</span> now (42 at the last contact)`,
				`<span id="lag" class="warn">unknown</span>`, `<li>Nothing yet: the daemon keeps trying by itself`},
			"ask the spool's operator whether " + url + " is up", []string{"up to date", "of 42"}, true},
		{"permanent", syncer.Status{Position: 3, LastError: "x509: certificate signed by unknown authority; to fix: set SSL_CERT_FILE",
			Hint: "set SSL_CERT_FILE to the CA file (docs/TLS.md), then restart the daemon", DownSince: now}, StateUnknown,
			[]string{"TO DO: set SSL_CERT_FILE to the CA file (docs/TLS.md), then restart the daemon", "head is unknown",
				"Sync:          NOT SYNCING with the spool " + url + ": an error retrying will not fix, since "},
			[]string{"<li>set SSL_CERT_FILE", `<span id="connected" class="warn">NOT SYNCING`}, "SSL_CERT_FILE", []string{"up to date", "keeps trying", "no answer from"}, true},
		// A permanent error after an answer (a wrong spool key): the head
		// is that answer's, and the entries after the position wait.
		{"permanent after an answer", syncer.Status{Position: 3, Head: 5, SpoolHead: 5, LastContact: now, DownSince: now,
			LastError: "the log's entries from position 4 are signed by a key other than the spool key given",
			Hint:      "start the daemon with the spool key of this setup"}, StateUnknown,
			[]string{"Position:      3 applied; the spool's head was 5 at its last answer; nothing more is applied until the error is fixed",
				"Sync:          NOT SYNCING with the spool " + url + ": an error retrying will not fix"},
			[]string{`<span id="head" class="warn">5</span> at its last answer; nothing more is applied until the error is fixed`,
				`<span id="lag" class="err">2</span> entries, not applied until the error is fixed`},
			"spool key of this setup", []string{"up to date", "unknown", "no answer from"}, true},
		{"rollback", syncer.Status{Position: 10, Head: 10, SpoolHead: 8, Connected: true, LastContact: now, Alarm: rollback}, StateStopped,
			[]string{"ALARM: sync stopped at position 10: " + rollback,
				"TO DO: Do not delete this device's database", "cspool sync --clear-alarm",
				"Sync:          STOPPED by the integrity alarm; connected to the spool " + url,
				"Position:      10 applied; the spool's head is 8, behind what this device applied",
				"Last error:    the integrity alarm above stopped the sync"},
			[]string{`<span id="head" class="err">8</span> behind what this device applied`, `<span id="lag" class="err">stopped</span>`,
				`class="alarm" role="alert">Integrity alarm: sync stopped at position 10`},
			"Tell the spool's operator", []string{"up to date", "10 of 10", "Last error:    none"}, true},
		{"current", syncer.Status{Position: 42, Head: 42, SpoolHead: 42, Connected: true, LastContact: now}, StateCurrent,
			[]string{"Sync:          connected to the spool " + url, "Position:      42 of 42 (up to date)", "Last error:    none", "Queued:        none"},
			[]string{`<span id="connected" class="ok">connected to the spool`, `<span id="head" class="mono">42</span>`, `<span id="lag" class="ok">0</span> entries (up to date)`},
			"", []string{"TO DO", "unknown"}, false},
		{"offline with changes", syncer.Status{Position: 42, Head: 42, SpoolHead: 42, LastContact: now.Add(-time.Minute),
			DownSince: now.Add(-time.Minute), LastError: "dial tcp 192.0.2.1:3999: connection refused", Queued: 3}, StateUnknown,
			[]string{"Queued:        3 changes made on this device (shown already; sent when the spool answers)", "head is unknown now"},
			[]string{`<td id="queued" data-queued="3">3 changes made on this device`},
			"is up", []string{"up to date", "Queued:        none"}, true},
		{"sending changes", syncer.Status{Position: 42, Head: 42, SpoolHead: 42, Connected: true, LastContact: now, Queued: 1}, StateBehind,
			[]string{"Position:      42 of 42 (sending the changes made here)", "Queued:        1 change made on this device"},
			[]string{`<td id="queued" data-queued="1">1 change made`},
			"", []string{"up to date", "TO DO"}, false},
		{"behind", syncer.Status{Position: 40, Head: 42, SpoolHead: 42, Connected: true, LastContact: now}, StateBehind,
			[]string{"Position:      40 of 42 (2 behind)"}, []string{`<span id="lag" class="warn">2</span> entries`},
			"", []string{"up to date", "TO DO"}, false},
	}
	tmpl, err := parsePage()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			col := &Collector{Sync: fixedStatus(c.st), Store: storeWith(t, 1), Spool: url, IMAP: IMAPSettings{User: "alice"},
				Now: func() time.Time { return now }}
			r, err := col.Report(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if r.Sync.State != c.state {
				t.Errorf("state %q, want %q", r.Sync.State, c.state)
			}
			if (r.Sync.LastError != "") != c.lastErrSet {
				t.Errorf("last error %q, want one: %v", r.Sync.LastError, c.lastErrSet)
			}
			acts := strings.Join(r.Actions, "\n")
			if (c.action == "") != (len(r.Actions) == 0) || !strings.Contains(acts, c.action) {
				t.Errorf("actions %q, want one with %q (none if empty)", r.Actions, c.action)
			}
			var text bytes.Buffer
			if err := WriteText(&text, r, now); err != nil {
				t.Fatal(err)
			}
			for _, w := range c.text {
				if !strings.Contains(text.String(), w) {
					t.Errorf("text lacks %q:\n%s", w, text.String())
				}
			}
			for _, w := range c.notInText {
				if strings.Contains(text.String(), w) {
					t.Errorf("text has %q:\n%s", w, text.String())
				}
			}
			var page bytes.Buffer
			if err := tmpl.Execute(&page, pageData{Report: r, Refresh: 5}); err != nil {
				t.Fatal(err)
			}
			for _, w := range c.page {
				if !strings.Contains(page.String(), w) {
					t.Errorf("page lacks %q:\n%s", w, page.String())
				}
			}
			if c.state != StateCurrent && strings.Contains(page.String(), "up to date") {
				t.Errorf("page says up to date in state %s", c.state)
			}
		})
	}
}
