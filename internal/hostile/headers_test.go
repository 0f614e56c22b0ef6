package hostile

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"cspool/internal/api"
)

// TestStrippedChainHeaders: the spool goes back to its state at position 5
// and new mail lands after it (as TestRollbackRegrown), and the proxy
// removes both chain headers from its answers, as if the server were one
// without the chain. Taking that for an old server would switch the
// rollback check off and apply the regrown log over the device's history.
func TestStrippedChainHeaders(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(8)
	d.mustSync(t)
	before := d.state(t)
	r.proxy.Set("d", &View{Rewrite: DropRange(6, 8, true), Headers: StripHeaders(api.HeaderChainStart, api.HeaderChainHead)})
	r.deliver(6) // real 9..14, shown as 6..11
	alarmed(t, d, d.sync(t), "carries no chain hashes", 8, before)
}

// TestChainHeadersTampered: the proxy tells the truth about the entries
// but strips, adds or alters the chain headers. Without both headers the
// read is an alarm; a malformed pair is refused like any malformed answer
// (nothing applied, retried, no alarm); a well-formed pair that does not
// match the device's chain is an alarm.
func TestChainHeadersTampered(t *testing.T) {
	t.Parallel()
	other := strings.Repeat("ab", 32)
	cases := []struct {
		name    string
		headers func(http.Header)
		alarm   string // "" for a refused read without an alarm
	}{
		{"both stripped", StripHeaders(api.HeaderChainStart, api.HeaderChainHead), "carries no chain hashes"},
		{"start stripped", StripHeaders(api.HeaderChainStart), ""},
		{"head stripped", StripHeaders(api.HeaderChainHead), ""},
		{"start given twice", func(h http.Header) { h.Add(api.HeaderChainStart, h.Get(api.HeaderChainStart)) }, ""},
		{"start in upper case", func(h http.Header) { h.Set(api.HeaderChainStart, strings.ToUpper(h.Get(api.HeaderChainStart))) }, ""},
		{"start altered", SetHeader(api.HeaderChainStart, other), "rewritten, rolled back or forked"},
		{"head altered", SetHeader(api.HeaderChainHead, other), "do not hash to the head"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			d := r.device("d")
			r.deliver(5)
			d.mustSync(t)
			before := d.state(t)
			r.deliver(3)
			r.proxy.Set("d", &View{Headers: tc.headers})
			err := d.sync(t)
			if tc.alarm != "" {
				alarmed(t, d, err, tc.alarm, 5, before)
				return
			}
			if !errors.Is(err, api.ErrProtocol) || d.s.Status().Alarm != "" || d.position(t) != 5 {
				t.Fatalf("sync: %v, alarm %q, position %d: want the read refused as malformed, no alarm, position 5",
					err, d.s.Status().Alarm, d.position(t))
			}
			r.proxy.Set("d", nil)
			d.mustSync(t)
			if p := d.position(t); p != 8 {
				t.Fatalf("position %d after the honest read: want 8", p)
			}
		})
	}
}
