// Command imapstress runs internal/imapstress against an IMAP server: 10
// clients on one mailbox at full speed for a while, every response checked,
// and prints the report as JSON (commands completed by name, the elapsed
// time, protocol errors). bench/imapstress.sh runs it against cspool and
// Dovecot serving the same user.
//
//	go run ./bench/imapstress --addr 127.0.0.1:1143 --user alice --password pw --duration 30s
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"cspool/internal/imapstress"
)

func main() {
	fs := flag.NewFlagSet("imapstress", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:1143", "IMAP server `host:port`")
	user := fs.String("user", "alice", "login name")
	pass := fs.String("password", "", "password")
	mailbox := fs.String("mailbox", "INBOX", "mailbox every client selects")
	clients := fs.Int("clients", 10, "concurrent clients")
	dur := fs.Duration("duration", 30*time.Second, "how long the clients run")
	minMsgs := fs.Int("min", 5, "no EXPUNGE at or below this many messages")
	maxMsgs := fs.Int("max", 60, "no APPEND at or above this many messages")
	seed := fs.Uint64("seed", 1, "seed of the clients' choices")
	fs.Parse(os.Args[1:])
	rep, err := imapstress.Run(context.Background(), imapstress.Config{
		Addrs: []string{*addr}, User: *user, Password: *pass, Mailbox: *mailbox,
		Clients: *clients, Duration: *dur, MinMessages: *minMsgs, MaxMessages: *maxMsgs, Seed: *seed,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapstress:", err)
		if rep == nil {
			os.Exit(1)
		}
	}
	ms := map[string]float64{}
	for name, d := range rep.Time {
		ms[name] = float64(d.Microseconds()) / 1000
	}
	out := map[string]any{
		"seconds":        rep.Elapsed.Seconds(),
		"ops":            rep.Ops,
		"total_ms":       ms,
		"errors":         rep.Count,
		"first_errors":   rep.Violations,
		"expunge_issued": rep.ExpungeIssued,
		"final_messages": len(rep.Final),
	}
	json.NewEncoder(os.Stdout).Encode(out)
	if err != nil || rep.Count > 0 {
		os.Exit(1)
	}
}
