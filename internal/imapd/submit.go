package imapd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mailstore"
	"cspool/internal/syncer"
)

// submit sends one command through the log and returns its outcome (the
// provisional one when the syncer queued it, the spool being unreachable),
// or the IMAP error to reply with: NO [UNAVAILABLE] when a Submitter that
// does not queue cannot reach the spool, NO [OVERQUOTA] when the device's
// disk is full (the change refused before it was sent or queued) or when
// the change adds mail and the user's log on the spool is at its quota,
// NO [CONTACTADMIN] with the alarm's
// text while an integrity alarm stops the sync, NO with a code when the
// command was rejected.
func (s *session) submit(cmd *command.Command) (*mailstore.Outcome, error) {
	ctx, cancel := context.WithTimeout(s.srv.ctx, submitTimeout)
	defer cancel()
	outs, err := s.srv.cfg.Submit.Submit(ctx, cmd)
	switch {
	case errors.Is(err, syncer.ErrUnavailable):
		s.srv.log.Warn("change not made: spool unavailable", "command", cmd.Kind, "err", err)
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "the mail spool cannot be reached; nothing was changed, try again later"}
	case errors.Is(err, syncer.ErrOverQuota):
		// The user's to act on (delete mail), not a failure of ours: the
		// message was not taken, and the client keeps it (RFC 5530).
		s.srv.log.Info("change refused: over the spool's quota", "command", cmd.Kind, "err", err)
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota,
			Text: s.respText(overQuotaText(err))}
	case errors.Is(err, syncer.ErrIntegrity):
		// Not a bug of ours: the log failed a check and a person must act.
		// Say which alarm, and where to read what to do.
		s.srv.log.Warn("change refused: integrity alarm", "command", cmd.Kind, "err", err)
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeContactAdmin,
			Text: s.respText(err.Error()) + "; tell the spool's operator, and see cspool status for what to do"}
	case errors.Is(err, devicedb.ErrDiskFull):
		// Refused before it was sent or queued: nothing changed.
		s.srv.log.Warn("change not made: the disk holding the database is full", "command", cmd.Kind, "err", err)
		return nil, diskFull("nothing was changed")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.srv.log.Warn("change sent but not applied in time", "command", cmd.Kind, "err", err)
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "the change was sent to the spool but is not applied yet; check again later"}
	case err != nil:
		s.srv.log.Error("submitting a change failed", "command", cmd.Kind, "err", err)
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug,
			Text: "the change could not be submitted; see the daemon's log"}
	case len(outs) != 1:
		return nil, fmt.Errorf("submitting %s: got %d outcomes for one command", cmd.Kind, len(outs))
	}
	o := &outs[0]
	switch o.Status {
	case mailstore.Rejected:
		s.srv.log.Info("change rejected", "command", cmd.Kind, "reason", o.Reason, "pos", o.Pos)
		return o, s.rejection(o)
	case mailstore.Partial:
		// Messages kept (Outcome.Kept) are logged where the log applies
		// the change, for every device's changes alike.
		if len(o.Skipped) > 0 {
			s.srv.log.Info("change partly applied: messages gone", "command", cmd.Kind, "skipped", len(o.Skipped), "pos", o.Pos)
		}
	}
	return o, nil
}

// diskFull is the reply to a command the device's full disk stopped,
// then tells what became of it. RFC 5530 has no code for a full disk;
// OVERQUOTA, "would be over quota after the operation", is what Dovecot
// answers to one too ("Not enough disk space"), and a client does not
// take it for a failure that goes away if tried again at once.
func diskFull(then string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota,
		Text: "this device's disk is full: " + then + "; free space on it and try again (the daemon's log names the file)"}
}

// rejection is the reply for a rejected command (RFC 5530 codes).
func (s *session) rejection(o *mailstore.Outcome) error {
	code := imap.ResponseCodeCannot
	text := "the change was refused"
	switch o.Reason {
	case mailstore.ReasonNoMailbox:
		code, text = imap.ResponseCodeNonExistent, "the mailbox does not exist (any more)"
	case mailstore.ReasonMailboxExists:
		code, text = imap.ResponseCodeAlreadyExists, "the mailbox exists already"
	case mailstore.ReasonInbox:
		text = "INBOX cannot be deleted"
	case mailstore.ReasonInvalid:
		text = "the change is not valid"
	case mailstore.ReasonIDExists, mailstore.ReasonReplay, mailstore.ReasonForbidden:
		code, text = imap.ResponseCodeServerBug, "the change was rejected by the log"
	}
	if o.Detail != "" {
		text += ": " + s.respText(o.Detail)
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
}

// canonicalFlags checks a client's flags and spells system flags
// canonically; \Recent is dropped (session state, never stored).
func canonicalFlags(in []imap.Flag) ([]string, error) {
	out := make([]string, 0, len(in))
	seen := map[string]bool{}
	for _, f := range in {
		s := string(f)
		if strings.HasPrefix(s, `\`) {
			switch strings.ToLower(s) {
			case `\seen`:
				s = `\Seen`
			case `\answered`:
				s = `\Answered`
			case `\flagged`:
				s = `\Flagged`
			case `\deleted`:
				s = `\Deleted`
			case `\draft`:
				s = `\Draft`
			case `\recent`:
				continue
			default:
				return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug,
					Text: fmt.Sprintf("%q is not a flag that can be stored", cleanText(s))}
			}
		} else if err := command.CheckFlag(s); err != nil {
			return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug,
				Text: fmt.Sprintf("%q is not a valid keyword", cleanText(s))}
		}
		if k := strings.ToLower(s); !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	return out, nil
}

// overQuotaText is the text of NO [OVERQUOTA]: what the spool said, and
// what the user can do.
func overQuotaText(err error) string {
	var oq *syncer.OverQuotaError
	if errors.As(err, &oq) {
		return fmt.Sprintf("the mailbox is full: the spool holds %d of its %d bytes and this message needs about %d more; delete mail to make room; nothing was appended",
			oq.Usage, oq.Limit, oq.Size)
	}
	return "the mailbox is full; delete mail to make room; nothing was appended"
}
