package statuspage

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes r as the human-readable lines `cspool status` prints,
// alarms first; now is the reader's clock, for the ages.
func WriteText(w io.Writer, r *Report, now time.Time) error {
	var b strings.Builder
	for _, a := range r.Alarms {
		fmt.Fprintf(&b, "ALARM: %s\n", a)
	}
	fmt.Fprintf(&b, "cspool daemon for %s, as of %s\n", r.IMAP.User, r.Generated.Local().Format("2006-01-02 15:04:05"))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	pw := "the daemon's password"
	switch {
	case r.IMAP.EmptyPassword:
		pw = "empty"
	case r.IMAP.PasswordFile != "":
		pw = "in " + r.IMAP.PasswordFile
	}
	fmt.Fprintf(tw, "IMAP:\t%s port %d, user %s, password %s\n", r.IMAP.Host, r.IMAP.Port, r.IMAP.User, pw)
	page := "off"
	switch {
	case r.Page.URL != "":
		page = r.Page.URL + " (log in with the IMAP user and password)"
	case r.Page.Problem != "":
		page = "NOT SERVED: " + r.Page.Problem
	}
	fmt.Fprintf(tw, "Status page:\t%s\n", page)
	conn := "not connected to the spool"
	if r.Sync.Connected {
		conn = "connected to the spool"
	}
	if r.Sync.Spool != "" {
		conn += " " + r.Sync.Spool
	}
	fmt.Fprintf(tw, "Sync:\t%s\n", conn)
	behind := "up to date"
	if r.Sync.Lag > 0 {
		behind = fmt.Sprintf("%d behind", r.Sync.Lag)
	}
	fmt.Fprintf(tw, "Position:\t%d of %d (%s)\n", r.Sync.Position, r.Sync.Head, behind)
	fmt.Fprintf(tw, "Last contact:\t%s\n", whenText(r.Sync.LastContact, now))
	lastErr := "none"
	if r.Sync.LastError != "" {
		lastErr = r.Sync.LastError
	}
	fmt.Fprintf(tw, "Last error:\t%s\n", lastErr)
	cp := "none on the spool"
	if r.Checkpoint.Position != 0 {
		cp = fmt.Sprintf("position %d on the spool", r.Checkpoint.Position)
	}
	fmt.Fprintf(tw, "Checkpoint:\t%s; written by this device: %s; rebuilds: %d\n", cp, whenText(r.Checkpoint.Written, now), r.Checkpoint.Restores)
	if r.Checkpoint.Bad != 0 {
		fmt.Fprintf(tw, "Bad checkpoint:\tposition %d failed validation\n", r.Checkpoint.Bad)
	}
	fmt.Fprintf(tw, "Rejected:\t%d entries\n", r.Rejected.Count)
	for _, x := range r.Rejected.Recent {
		d := ""
		if x.Detail != "" {
			d = " (" + x.Detail + ")"
		}
		fmt.Fprintf(tw, "\tposition %d: %s%s\n", x.Pos, x.Reason, d)
	}
	if o := r.Outbox; o != nil {
		q := fmt.Sprintf("%d queued", o.Queued)
		if o.Queued > 0 {
			q += fmt.Sprintf(" (%d deferred), oldest %s", o.Deferred, whenText(o.Oldest, now))
			if !o.NextTry.IsZero() {
				q += ", next try at " + o.NextTry.Local().Format("15:04:05")
			}
		}
		fmt.Fprintf(tw, "Outbox:\t%s; %d to file in the log; via %s\n", q, o.ToFile, o.Relay)
		fmt.Fprintf(tw, "Sent:\t%d relayed, %d bounced since start; last %s\n", o.Relayed, o.Bounced, whenText(o.LastSent, now))
		if o.LastError != "" {
			fmt.Fprintf(tw, "Outbox error:\t%s\n", o.LastError)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	width := len("Folders:")
	for _, mb := range r.Mailboxes {
		width = max(width, 2+len(mb.Name))
	}
	fmt.Fprintf(&b, "%-*s %9s %7s %10s\n", width, "Folders:", "messages", "unseen", "size")
	for _, mb := range r.Mailboxes {
		fmt.Fprintf(&b, "  %-*s %9d %7d %10s\n", width-2, mb.Name, mb.Messages, mb.Unseen, humanSize(mb.Size))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func whenText(t, now time.Time) string {
	if t.IsZero() {
		return "never (since the daemon started)"
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + age(now.Sub(t)) + ")"
}
