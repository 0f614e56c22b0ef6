package imapd

import (
	"strings"
	"testing"
)

// TestAppendNameLiteralTooLong: an APPEND whose mailbox comes as a
// literal over maxBufferedLiteral gets NO [TOOBIG] before the client is
// asked for it (a synchronizing literal), or with its bytes and the rest
// of the command dropped (LITERAL+), as a literal of any other command;
// the message's literal is never read as a command. The framer let every
// literal of an APPEND through: it asked for a name of 64 KB, go-imap,
// which stops reading a command at 50 KiB, answered NO [SERVERBUG] or BAD
// and ended the connection, or read on in the command's bytes as
// commands: the message "z1 CREATE Smuggled" created the mailbox.
func TestAppendNameLiteralTooLong(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	name := strings.Repeat("b", 65536)
	msg := "z1 CREATE Smuggled\r\n"
	for _, cmd := range []string{
		"APPEND {65536}\r\n" + name + " {20}\r\n" + msg,
		"APPEND {65536+}\r\n" + name + " {20+}\r\n" + msg,
		"APPEND {4097+}\r\n" + name[:4097] + " (\\Seen) {20+}\r\n" + msg,
	} {
		u, tagged := w.run(cmd)
		if status(tagged) != "NO [TOOBIG]" {
			t.Errorf("%.30q...: got %q (untagged %.100q), want NO [TOOBIG]", cmd, tagged, u)
		}
		w.ok("NOOP")
	}
	w.ok("APPEND {5}\r\nINBOX {20}\r\n" + msg)
	if u := w.ok(`LIST "" "*"`); strings.Contains(strings.Join(u, ""), "Smuggled") {
		t.Errorf("a message's bytes were taken for a command: %q", u)
	}
}
