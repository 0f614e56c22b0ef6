package deliver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
)

// DefaultMaxMessageBytes is the message size limit when none is configured
// (command.DefaultMaxMessageBytes, which devices use for APPEND).
const DefaultMaxMessageBytes = command.DefaultMaxMessageBytes

// Directory resolves a user name to the user's public key; Lookup returns an
// error wrapping keys.ErrUnknownUser for a user it does not know. Any other error
// is taken as temporary (the directory could not answer).
type Directory interface {
	Lookup(ctx context.Context, user string) (keys.PublicKey, error)
}

// FoldedDirectory is a Directory that also finds a user by its name with
// the ASCII capitals in lower case (keys.FoldCase), for an address whose
// case a mail server folded: "carol@" for a user "Carol" (userdb.DB).
type FoldedDirectory interface {
	LookupFolded(ctx context.Context, folded string) (user string, key keys.PublicKey, err error)
}

// StaticDirectory is a fixed Directory; keys.Users converts to it.
type StaticDirectory map[string]keys.PublicKey

// Lookup returns the key of user, or an error wrapping keys.ErrUnknownUser.
func (s StaticDirectory) Lookup(_ context.Context, user string) (keys.PublicKey, error) {
	k, ok := s[user]
	if !ok {
		return keys.PublicKey{}, fmt.Errorf("looking up %q: %w", user, keys.ErrUnknownUser)
	}
	return k, nil
}

// Appender is what deliveries are appended to: spool.Store satisfies it, and
// so does the HTTP API client. Append returns only once the batch is
// durable; once it has returned nil it does not use the batch's bytes
// again (the LMTP listener seals the next message into them).
type Appender interface {
	Append(ctx context.Context, user string, batch [][]byte) (first uint64, err error)
}

// Deliverer seals messages for users and appends them to their logs. Its
// fields are set once before use; it is then safe for concurrent use.
type Deliverer struct {
	// Log receives the sealed entries.
	Log Appender
	// SpoolKey signs every delivery. It cannot decrypt them.
	SpoolKey *keys.SecretKey
	// Users resolves recipients to their public keys.
	Users Directory
	// Now gives the received time; nil means time.Now.
	Now func() time.Time
	// MaxMessageBytes is the largest message accepted; zero means
	// DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// Chains, if set, seals deliveries in entry format 3, a chain of keys
	// for each user (entry.Chains); nil seals format 2.
	Chains *entry.Chains
	// Chained, if set with Chains, says for each delivery whether its
	// user's deliveries are sealed in format 3 (as Chains says) or 2:
	// --entry-format auto (api.Server.SealsVersion3).
	Chained func(ctx context.Context, user string) bool
}

func (d *Deliverer) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Deliverer) maxBytes() int64 {
	if d.MaxMessageBytes > 0 {
		return d.MaxMessageBytes
	}
	return DefaultMaxMessageBytes
}

// Deliver seals msg for user and appends it to user's log, returning the
// entry's position once it is durable. msg is stored byte for byte, whatever
// it holds. Errors classify with KindOf.
func (d *Deliverer) Deliver(ctx context.Context, user string, msg []byte) (pos uint64, err error) {
	return d.DeliverEnvelope(ctx, user, Envelope{}, msg)
}

// DeliverEnvelope is Deliver with the header fields env adds (Return-Path,
// Delivered-To) in front of msg, which follows them byte for byte. Each
// ends as msg's first line does: in a bare LF, as a message a mail
// transfer agent pipes to a command often is, or else in CRLF. The size
// limit applies to msg.
func (d *Deliverer) DeliverEnvelope(ctx context.Context, user string, env Envelope, msg []byte) (pos uint64, err error) {
	if err := keys.CheckUserName(user); err != nil {
		return 0, fmt.Errorf("delivering: %w: %w", keys.ErrUnknownUser, err)
	}
	if n := int64(len(msg)); n > d.maxBytes() {
		return 0, fmt.Errorf("delivering to %s: %w: %d bytes, limit %d", user, ErrTooLarge, n, d.maxBytes())
	}
	key, err := d.Users.Lookup(ctx, user)
	if err != nil {
		return 0, fmt.Errorf("delivering to %s: %w", user, err)
	}
	pos, _, err = d.deliverTo(ctx, user, key, traceFields(env, lineEnd(msg)), msg, d.now(), nil)
	return pos, err
}

// deliverTo seals trace followed by msg and appends it without checks: the
// caller has validated user, looked up key and bounded msg. It returns the entry's position and its
// sealed (padded) size, the only size worth logging: the one the spool
// keeps. With bufs, the entry is sealed into a buffer of the pool, given
// back once the append has returned nil (see bufPool).
func (d *Deliverer) deliverTo(ctx context.Context, user string, key keys.PublicKey, trace, msg []byte, received time.Time, bufs *bufPool) (pos uint64, sealedLen int, err error) {
	if d.SpoolKey == nil {
		return 0, 0, errors.New("delivering: no spool key configured")
	}
	var dst []byte
	if bufs != nil {
		n := int64(sealedBound(len(trace) + len(msg)))
		dst = bufs.get(int(bufs.fit(n, n+n/2)))
	}
	c := &command.Command{Kind: command.Deliver, Date: received.UnixMilli(), Body: msg}
	chains := d.Chains
	if chains != nil && d.Chained != nil && !d.Chained(ctx, user) {
		chains = nil
	}
	sealed, _, err := entry.AppendSeal(dst, c, d.SpoolKey, key, user, &entry.Options{BodyPrefix: trace, Chains: chains})
	if err != nil {
		return 0, 0, fmt.Errorf("delivering to %s: %w", user, err)
	}
	pos, err = d.Log.Append(ctx, user, [][]byte{sealed})
	if err != nil {
		return 0, 0, fmt.Errorf("delivering to %s: appending %d bytes: %w", user, len(sealed), err)
	}
	if bufs != nil {
		bufs.put(sealed)
	}
	return pos, len(sealed), nil
}

// sealedBound is about the size of the entry of a body of n bytes, at
// least: the body, Padmé's rounding (at most an eighth more) and a
// kilobyte for the fields, the command's header and the cipher's tags.
// A buffer that turns out too small is grown by AppendSeal.
func sealedBound(n int) int { return n + n/8 + 1024 }
