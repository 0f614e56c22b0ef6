package mailstore

import (
	"crypto/sha256"

	"cspool/internal/command"
)

// Prepared is the work on a message's bytes that depends on them alone:
// the SHA-256 that names the stored body and the MIME parse. Made by
// Prepare before Apply, on any goroutine (the sync loop makes it on every
// core while the batch before applies), it keeps that work out of the
// apply's transaction; Apply does it itself for an entry without it.
type Prepared struct {
	body   []byte
	digest [sha256.Size]byte
	parsed parsedMessage
}

// Prepare does the work on c's message for Apply: c must not change
// until it is applied. It returns nil for a command that carries no
// message (only Deliver and Append store one).
func Prepare(c *command.Command) *Prepared {
	if c == nil || (c.Kind != command.Deliver && c.Kind != command.Append) {
		return nil
	}
	p, err := parseMessage(c.Body)
	if err != nil {
		return nil // Apply parses again and reports it
	}
	return &Prepared{body: c.Body, digest: sha256.Sum256(c.Body), parsed: p}
}

// of returns p when it was made for exactly the bytes b (the same slice),
// else nil: work made for other bytes is never used.
func (p *Prepared) of(b []byte) *Prepared {
	if p == nil || len(p.body) != len(b) || (len(b) > 0 && &p.body[0] != &b[0]) {
		return nil
	}
	return p
}
