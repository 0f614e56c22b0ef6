package statuspage

import (
	"fmt"
	"html/template"
	"time"
)

// pageData is what the template sees.
type pageData struct {
	*Report
	Refresh int // seconds
	Style   template.CSS
}

// SyncView is the sync state in the page's words (the same as the text
// form's): unknown where it is not known now.
func (p pageData) SyncView() syncView {
	s := p.Sync
	v := syncView{ConnClass: "ok", Head: fmt.Sprint(s.Head), HeadClass: "mono", Lag: fmt.Sprint(s.Lag), LagClass: "warn"}
	v.Conn, v.Position = syncLines(s, p.Generated)
	switch {
	case s.State == StateCurrent:
		v.LagClass, v.LagNote = "ok", "entries (up to date)"
	case s.State == StateBehind:
		v.LagNote = "entries"
	case s.State == StateStopped:
		v.Lag, v.LagClass, v.LagNote = "stopped", "err", "by the integrity alarm"
	case s.NeedsFix && s.SpoolHead != nil:
		v.Lag, v.LagClass, v.LagNote = fmt.Sprint(*s.SpoolHead-min(*s.SpoolHead, s.Position)), "err", "entries, not applied until the error is fixed"
	default:
		v.Lag, v.LagNote = "unknown", "(the spool does not answer now)"
	}
	switch {
	case s.State == StateCurrent || s.State == StateBehind:
	case s.SpoolHead == nil:
		v.Head, v.HeadClass, v.HeadNote = "unknown", "warn", "(no answer since the daemon started)"
	case s.State == StateStopped && *s.SpoolHead < s.Position:
		v.Head, v.HeadClass, v.HeadNote = fmt.Sprint(*s.SpoolHead), "err", "behind what this device applied"
	case s.State == StateStopped:
		v.Head = fmt.Sprint(*s.SpoolHead)
	case s.NeedsFix:
		v.Head, v.HeadClass, v.HeadNote = fmt.Sprint(*s.SpoolHead), "warn", "at its last answer; nothing more is applied until the error is fixed"
	default:
		v.Head, v.HeadClass, v.HeadNote = "unknown", "warn", fmt.Sprintf("now (%d at the last contact)", *s.SpoolHead)
	}
	if !s.Connected || s.StoreFailing || s.State == StateStopped {
		v.ConnClass = "warn"
	}
	return v
}

// syncView is the Sync table's cells.
type syncView struct {
	Conn, ConnClass, Position string
	Head, HeadClass, HeadNote string
	Lag, LagClass, LagNote    string
}

// pageStyle is the page's only style; the Content-Security-Policy allows
// exactly this text by its hash.
const pageStyle = `
body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:60em;padding:0 1em;color:#1b1b1b;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}
h2{font-size:1.1em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em}
.alarm{background:#b00020;color:#fff;font-weight:bold;padding:.8em 1em;margin:1em 0;border-radius:4px}
.ok{color:#11661e;font-weight:bold}
.warn{color:#a35200;font-weight:bold}
.err{color:#b00020}
table{border-collapse:collapse}
th,td{text-align:left;padding:.2em 1.2em .2em 0;vertical-align:top}
td.num,th.num{text-align:right}
code,.mono{font-family:ui-monospace,monospace}
`

func parsePage() (*template.Template, error) {
	funcs := template.FuncMap{
		"when": func(t, now time.Time) string {
			if t.IsZero() {
				return "never (since the daemon started)"
			}
			return t.Local().Format("2006-01-02 15:04:05") + " (" + age(now.Sub(t)) + ")"
		},
		"size":   humanSize,
		"queued": queuedText,
	}
	t, err := template.New("page").Funcs(funcs).Parse(pageTemplate)
	if err != nil {
		return nil, fmt.Errorf("statuspage: parsing the page template: %w", err)
	}
	return t, nil
}

// age says how long ago, in the largest whole unit.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
	}
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

const pageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{if .Alarms}}ALARM - {{end}}cspool: {{.IMAP.User}}</title>
<style>{{.Style}}</style>
</head>
<body>
<h1>cspool for <span id="user">{{.IMAP.User}}</span></h1>
<p class="meta">As of {{.Generated.Local.Format "2006-01-02 15:04:05"}}; this page reloads every {{.Refresh}} s.</p>
{{range .Alarms}}<div class="alarm" role="alert">Integrity alarm: {{.}}</div>
{{end}}{{with .Actions}}<h2>What to do</h2>
<ul id="actions">{{range .}}<li>{{.}}</li>{{end}}</ul>
{{end}}
<h2>Mail client settings</h2>
<table id="imap">
<tr><th>Server</th><td id="imap-host" class="mono">{{.IMAP.Host}}</td></tr>
<tr><th>Port</th><td id="imap-port" class="mono">{{.IMAP.Port}}</td></tr>
<tr><th>Security</th><td>none (the daemon listens on this machine only)</td></tr>
<tr><th>User</th><td id="imap-user" class="mono">{{.IMAP.User}}</td></tr>
<tr><th>Password</th><td>{{if .IMAP.EmptyPassword}}empty{{else}}the one you logged in to this page with{{if .IMAP.PasswordFile}}; stored in <code>{{.IMAP.PasswordFile}}</code>{{end}}{{end}}</td></tr>
</table>

<h2>Sync</h2>
<table id="sync">
{{with .SyncView}}<tr><th>Spool</th><td><span id="connected" class="{{.ConnClass}}">{{.Conn}}</span></td></tr>
<tr><th>Applied up to</th><td>position <span id="position" class="mono">{{$.Sync.Position}}</span></td></tr>
<tr><th>Spool head</th><td><span id="head" class="{{.HeadClass}}">{{.Head}}</span>{{with .HeadNote}} {{.}}{{end}}</td></tr>
<tr><th>Behind by</th><td><span id="lag" class="{{.LagClass}}">{{.Lag}}</span> {{.LagNote}}</td></tr>{{end}}
<tr><th>Last contact</th><td id="last-contact">{{when .Sync.LastContact .Generated}}</td></tr>
<tr><th>Last error</th><td id="last-error">{{with .Sync.LastError}}<span class="err">{{.}}</span>{{else}}none{{end}}</td></tr>
<tr><th>Waiting to send</th><td id="queued" data-queued="{{.Sync.Queued}}">{{queued .Sync.Queued}}</td></tr>
<tr><th>Applied since start</th><td>{{.Sync.Applied}} entries</td></tr>
</table>

<h2>Folders</h2>
<table id="mailboxes">
<tr><th>Folder</th><th>Use</th><th class="num">Messages</th><th class="num">Unseen</th><th class="num">Size</th></tr>
{{range .Mailboxes}}<tr data-mailbox="{{.Name}}"><td class="mono">{{.Name}}</td><td>{{.SpecialUse}}</td><td class="num" data-messages="{{.Messages}}">{{.Messages}}</td><td class="num" data-unseen="{{.Unseen}}">{{.Unseen}}</td><td class="num">{{size .Size}}</td></tr>
{{end}}</table>

<h2>Checkpoint</h2>
<table id="checkpoint">
<tr><th>Newest on the spool</th><td>{{if .Checkpoint.Position}}position <span class="mono">{{.Checkpoint.Position}}</span>{{else}}none yet{{end}}</td></tr>
<tr><th>Written by this device</th><td>{{when .Checkpoint.Written .Generated}}</td></tr>
<tr><th>Rebuilds from a checkpoint</th><td>{{.Checkpoint.Restores}} since start</td></tr>
{{with .Checkpoint.Bad}}<tr><th>Failed validation</th><td class="err">position {{.}}</td></tr>{{end}}
</table>

{{with .Search}}<h2>Search index</h2>
<p id="search-index" data-unindexed="{{.Unindexed}}" data-outdated="{{.Outdated}}">{{if .Unindexed}}Building: {{.Unindexed}} messages to go (searches read them meanwhile).{{else}}Complete.{{end}}{{if .Outdated}} {{.Outdated}} messages indexed by an earlier cspool to index again (searches find in them what they found before meanwhile).{{end}}</p>
{{end}}{{with .Outbox}}<h2>Outbox</h2>
<table id="outbox">
<tr><th>Smarthost</th><td class="mono">{{.Relay}}</td></tr>
<tr><th>Queued</th><td id="outbox-queued" data-queued="{{.Queued}}">{{.Queued}}{{if .Queued}} ({{.Deferred}} deferred), oldest {{when .Oldest $.Generated}}{{if not .NextTry.IsZero}}, next try at {{.NextTry.Local.Format "15:04:05"}}{{end}}{{end}}</td></tr>
{{if .Held}}<tr><th>Held</th><td id="outbox-held" class="warn">{{.Held}} queued messages not relayed: this outbox was copied or restored from another machine or file, which may send them too; check its Sent folder, then restart once with <span class="mono">--release-outbox={{.Hold}}</span> to send them</td></tr>{{end}}
<tr><th>To file in the log</th><td>{{.ToFile}} (Sent copies and bounces)</td></tr>
<tr><th>Since start</th><td>{{.Relayed}} relayed, {{.Bounced}} bounced; last sent {{when .LastSent $.Generated}}</td></tr>
{{with .LastError}}<tr><th>Last error</th><td class="err">{{.}}</td></tr>{{end}}
</table>
{{end}}
<h2>Rejected entries</h2>
<p id="rejected-count">{{if .Rejected.Count}}<span class="warn">{{.Rejected.Count}}</span> entries of the log were refused and not applied{{if gt .Rejected.Count (len .Rejected.Recent)}} (the newest {{len .Rejected.Recent}} below){{end}}.{{else}}None: every entry of the log was accepted.{{end}}</p>
{{if .Rejected.Recent}}<table id="rejected">
<tr><th class="num">Position</th><th>Reason</th><th>Detail</th><th>When</th></tr>
{{range .Rejected.Recent}}<tr><td class="num mono">{{.Pos}}</td><td>{{.Reason}}</td><td>{{.Detail}}</td><td>{{.At.Local.Format "2006-01-02 15:04:05"}}</td></tr>
{{end}}</table>{{end}}
</body>
</html>
`
