package statuspage

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"cspool/internal/termtext"
)

// WriteText writes r as the human-readable lines `cspool status` prints,
// alarms first; now is the reader's clock, for the ages.
func WriteText(w io.Writer, r *Report, now time.Time) error {
	var b strings.Builder
	for _, a := range r.Alarms {
		fmt.Fprintf(&b, "ALARM: %s\n", termtext.Printable(a))
	}
	for _, a := range r.Actions {
		fmt.Fprintf(&b, "TO DO: %s\n", termtext.Printable(a))
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
		page = "NOT SERVED: " + termtext.Printable(r.Page.Problem)
	}
	fmt.Fprintf(tw, "Status page:\t%s\n", page)
	conn, position := syncLines(r.Sync, now)
	fmt.Fprintf(tw, "Sync:\t%s\n", conn)
	fmt.Fprintf(tw, "Position:\t%s\n", position)
	fmt.Fprintf(tw, "Last contact:\t%s\n", whenText(r.Sync.LastContact, now))
	lastErr := "none"
	if r.Sync.LastError != "" {
		lastErr = termtext.Printable(r.Sync.LastError)
	}
	fmt.Fprintf(tw, "Last error:\t%s\n", lastErr)
	fmt.Fprintf(tw, "Queued:\t%s\n", queuedText(r.Sync.Queued))
	if t := readersText(r.Sync.Readers); t != "" {
		fmt.Fprintf(tw, "Deletions:\t%s\n", t)
	}
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
			d = " (" + termtext.Printable(x.Detail) + ")"
		}
		fmt.Fprintf(tw, "\tposition %d: %s%s\n", x.Pos, termtext.Printable(x.Reason), d)
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
		if o.Held > 0 {
			fmt.Fprintf(tw, "Outbox held:\t%d queued messages not relayed: this outbox was copied or restored from another machine or file, which may send them too; "+
				"check its Sent folder, then restart once with --release-outbox=%s to send them (docs/SENDING.md)\n", o.Held, termtext.Printable(o.Hold))
		}
		fmt.Fprintf(tw, "Sent:\t%d relayed, %d bounced since start; last %s\n", o.Relayed, o.Bounced, whenText(o.LastSent, now))
		if o.LastError != "" {
			fmt.Fprintf(tw, "Outbox error:\t%s\n", termtext.Printable(o.LastError))
		}
	}
	if s := r.Search; s != nil {
		state := "complete"
		if s.Unindexed != 0 {
			state = fmt.Sprintf("building, %d messages to go (searches read them meanwhile)", s.Unindexed)
		}
		if s.Outdated != 0 {
			state += fmt.Sprintf("; %d messages indexed by an earlier cspool to index again", s.Outdated)
		}
		fmt.Fprintf(tw, "Search index:\t%s\n", state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	width := len("Folders:")
	for _, mb := range r.Mailboxes {
		width = max(width, 2+len(termtext.Printable(mb.Name)))
	}
	fmt.Fprintf(&b, "%-*s %9s %7s %10s\n", width, "Folders:", "messages", "unseen", "size")
	for _, mb := range r.Mailboxes {
		fmt.Fprintf(&b, "  %-*s %9d %7d %10s\n", width-2, termtext.Printable(mb.Name), mb.Messages, mb.Unseen, humanSize(mb.Size))
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

// syncLines are the words for the sync state that the page and the text
// form share: how the device stands with the spool, and where it is in the
// log. They say "unknown" for what is not known now, never "up to date".
func syncLines(s SyncState, now time.Time) (conn, position string) {
	spool := "the spool"
	if s.Spool != "" {
		spool += " " + s.Spool
	}
	switch {
	case s.Connected && s.StoreFailing:
		conn = "connected to " + spool + ", but NOT APPLYING: this device's database failed (the last error says why)"
	case s.Connected:
		conn = "connected to " + spool
	case s.LastError == "" && s.LastContact.IsZero():
		conn = "connecting to " + spool + " (no answer yet)"
	case s.NeedsFix:
		// The spool may well answer: what it answered, or what came
		// with it, needs a person (the actions say what).
		conn = "NOT SYNCING with " + spool + ": an error retrying will not fix"
		if !s.DownSince.IsZero() {
			conn += ", since " + whenText(s.DownSince, now)
		}
	case !s.DownSince.IsZero():
		conn = "NOT CONNECTED: no answer from " + spool + " since " + whenText(s.DownSince, now)
	default:
		conn = "NOT CONNECTED to " + spool
	}
	if s.State == StateStopped {
		conn = "STOPPED by the integrity alarm; " + conn
	}
	switch {
	case s.State == StateCurrent:
		return conn, fmt.Sprintf("%d of %d (up to date)", s.Position, s.Head)
	case s.State == StateBehind && s.Lag == 0:
		return conn, fmt.Sprintf("%d of %d (sending the changes made here)", s.Position, s.Head)
	case s.State == StateBehind:
		return conn, fmt.Sprintf("%d of %d (%d behind)", s.Position, s.Head, s.Lag)
	case s.SpoolHead == nil:
		return conn, fmt.Sprintf("%d applied; the spool's head is unknown (no answer since the daemon started)", s.Position)
	case s.State == StateStopped && *s.SpoolHead < s.Position:
		return conn, fmt.Sprintf("%d applied; the spool's head is %d, behind what this device applied", s.Position, *s.SpoolHead)
	case s.State == StateStopped:
		return conn, fmt.Sprintf("%d applied; the spool's head is %d; nothing more is applied until the alarm is resolved", s.Position, *s.SpoolHead)
	case s.NeedsFix:
		// The spool answered: its head is that answer's, not a stale one.
		return conn, fmt.Sprintf("%d applied; the spool's head was %d at its last answer; nothing more is applied until the error is fixed", s.Position, *s.SpoolHead)
	default:
		return conn, fmt.Sprintf("%d applied; the spool's head is unknown now (%d at the last contact)", s.Position, *s.SpoolHead)
	}
}

// queuedText says how many changes made on this device wait for the spool.
// readersText says how this device writes an EXPUNGE and a DELETE, from
// what the spool said of the user's devices; "" when it said nothing.
func readersText(f int) string {
	switch {
	case f == 0:
		return ""
	case f >= 4:
		return "EXPUNGE and DELETE take only what this device showed (every device of this user reads entry format 4)"
	}
	return fmt.Sprintf("EXPUNGE and DELETE as earlier releases wrote them (a device of this user read the log saying it reads only up to entry format %d: upgrade cspool on it)", f)
}

func queuedText(n int) string {
	switch n {
	case 0:
		return "none"
	case 1:
		return "1 change made on this device (shown already; sent when the spool answers)"
	}
	return fmt.Sprintf("%d changes made on this device (shown already; sent when the spool answers)", n)
}
