package imapd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"mime/quotedprintable"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// Fetch implements imapserver.Session. Messages are streamed from the store
// one at a time; a BODY[] or BINARY[] without PEEK on a read-write mailbox
// first sets \Seen on the messages lacking it, with one SetFlags command.
func (s *session) Fetch(w *imapserver.FetchWriter, set imap.NumSet, opts *imap.FetchOptions) (err error) {
	sel, err := s.current()
	if err != nil {
		return err
	}
	if err := s.checkSeqSet(set); err != nil {
		return err
	}
	fc := framer(s.conn.NetConn())
	// Without the framer, a wide origin could not be written back.
	rev2 := fc != nil && s.conn.EnabledCaps().Has(imap.CapIMAP4rev2)
	if err := checkSections(opts, fc, rev2); err != nil {
		return err
	}
	narrow, wide := splitWide(opts)
	// The messages are resolved a block at a time as the store's rows
	// come (refCursor), not all at once.
	targets := sel.mb.refSetOf(sel.st, s.known(), set, sel.searchRes)
	first := sel.mb.refsFrom(sel.st, targets, 0, make([]ref, 0, 1))
	if len(first) == 0 {
		return nil
	}
	ctx, cancel := s.ctx()
	defer cancel()
	span := imap.UIDSet{{Start: first[0].uid, Stop: max(first[0].uid, targets.lastUID)}}

	markSeen := !sel.readOnly && setsSeen(opts)
	if markSeen {
		var ids []command.ID
		in := newRefCursor(sel.mb, sel.st, targets)
		err := sel.box.Fetch(ctx, storeUIDs(span), 0, func(m *mailstore.Message) error {
			if _, ok := in.find(imap.UID(m.UID)); ok && !hasFlag(m.Flags, `\Seen`) {
				ids = append(ids, m.ID)
			}
			return nil
		})
		if err != nil {
			return s.selectedError(sel, err)
		}
		if len(ids) > 0 {
			// The FETCH below reports the new flags itself.
			_, err := s.submitQuiet(sel, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: ids})
			if err != nil {
				// Reads go on without the spool: serve the content and
				// leave \Seen unset.
				s.srv.log.Warn("could not set \\Seen on fetched messages", "err", err)
				markSeen = false
			}
		} else {
			markSeen = false
		}
	}

	// The responses go out in blocks, not one write each.
	if fc != nil {
		fc.hold()
		defer func() {
			if rerr := fc.release(); rerr != nil && err == nil {
				err = rerr // the connection is gone
			}
		}()
	}
	want := fetchWant(opts)
	basicGlobals := partSections(opts)
	if basicGlobals {
		want |= mailstore.WantStructure // globalPathsOf
	}
	if want&mailstore.WantRaw != 0 {
		// A large message's bytes are read once the FETCH budget holds
		// them (loadWithin).
		want |= mailstore.WantLargeRawLater
	}
	// BODY and BODYSTRUCTURE together look like BODYSTRUCTURE alone in
	// opts; the library writes both.
	direct := fc != nil && directFetch && directItems(opts) && (opts.BodyStructure == nil || !fc.asksFor("BODY"))
	if direct && !opts.Envelope && opts.BodyStructure == nil && listedFetch {
		return s.fetchListed(ctx, w, fc, sel, targets, opts)
	}
	switch {
	case direct && (opts.Envelope || opts.BodyStructure != nil):
		if opts.Envelope {
			want = want&^mailstore.WantEnvelope | mailstore.WantEnvelopeWire
		}
		if opts.BodyStructure != nil {
			want = want&^mailstore.WantStructure | mailstore.WantStructureWire
		}
		if formIndexes {
			// The messages from their index, without a row each.
			want |= mailstore.WantListing
		}
	case direct:
		want = mailstore.WantMetadataOnly | mailstore.WantListing
	}
	var writeErr error
	// The responses written here gather in out and reach the framer a
	// block at a time; out goes first whenever anything else is written.
	out := &fetchBlock{fc: fc}
	flush := out.flush
	// A FETCH written here reads its rows through the driver itself, each
	// Message only until the next.
	fetch := sel.box.Fetch
	if direct {
		fetch = sel.box.FetchForms
	}
	refAt := newRefCursor(sel.mb, sel.st, targets)
	err = fetch(ctx, storeUIDs(span), want, func(m *mailstore.Message) error {
		r, ok := refAt.find(imap.UID(m.UID))
		if !ok {
			return nil
		}
		if opts.Flags || markSeen {
			var untold bool
			m.Flags, untold = s.fetchFlags(imap.UID(m.UID), m.Flags)
			if untold {
				if writeErr = flush(); writeErr != nil {
					return writeErr
				}
				if writeErr = s.tell(m.Flags); writeErr != nil {
					return writeErr
				}
			}
		}
		if direct && (m.EnvelopeWire != nil || !opts.Envelope) && (m.StructureWire != nil || opts.BodyStructure == nil) && validFlags(m.Flags) {
			if !rev2 && globalWire(m.StructureWire) {
				m.StructureWire = rev1Wire(m.StructureWire)
			}
			writeErr = out.add(r.seq, m, opts)
			return writeErr
		}
		if writeErr = flush(); writeErr != nil {
			return writeErr
		}
		var gp globalPaths
		if basicGlobals {
			var err error
			if gp, err = globalPathsOf(m, rev2); err != nil {
				return err
			}
		}
		var plan *streamPlan
		if want&mailstore.WantRaw != 0 && m.Raw == nil {
			var release func()
			var err error
			// A message/global part's sections are read whole (gp).
			plan, release, err = s.srv.readWithin(ctx, m, opts, len(wide) == 0 && gp == nil)
			if err != nil {
				var ie *imap.Error
				if errors.As(err, &ie) {
					writeErr = err // NO [UNKNOWN-CTE]
				}
				return err
			}
			defer release()
		}
		if plan == nil {
			if writeErr = checkBinary(m, opts, gp); writeErr != nil {
				return writeErr
			}
		}
		env, bs, stored, err := decodeForms(m, opts, !rev2)
		if err != nil {
			return err
		}
		if fc != nil && !stored.none() {
			fc.swapForms(stored)
			defer func() {
				if err := fc.endFormSwap(); err != nil && writeErr == nil {
					writeErr = err
				}
			}()
		}
		if len(wide) > 0 {
			writeErr = writeWide(w, fc, r.seq, m, env, bs, narrow, wide, markSeen, gp)
			return writeErr
		}
		writeErr = writeMessage(w.CreateMessage(r.seq), m, env, bs, opts, markSeen, plan, gp)
		if writeErr != nil && plan != nil {
			// A literal announced and cut short (the store's read
			// failed) leaves the client nothing to read the rest by.
			s.conn.NetConn().Close()
		}
		return writeErr
	})
	if writeErr == nil {
		writeErr = flush()
	}
	if writeErr != nil {
		return writeErr // the connection is gone
	}
	if err != nil {
		return s.selectedError(sel, err)
	}
	return nil
}

// readWithin makes m's bytes ready for its FETCH response within the
// FETCH memory budget (Config.FetchMemory), m being a message the store
// left for later (mailstore.WantLargeRawLater), and returns the release of
// its share, to be called once the response is written. The sections opts
// asks for are streamed from the store when they can be (planStream,
// stream.go; not when wide sections are asked for, streamed false),
// charged streamHold; else the message is read whole (loadWithin).
func (s *Server) readWithin(ctx context.Context, m *mailstore.Message, opts *imap.FetchOptions, streamed bool) (*streamPlan, func(), error) {
	if br, ok := m.RawAt(); ok && streamed && streamSections {
		hold := min(streamHold, fetchCost*max(m.Size, 1), s.cfg.FetchMemory)
		if err := s.fetchMem.Acquire(ctx, hold); err != nil {
			return nil, nil, fmt.Errorf("waiting to read message uid %d: %w", m.UID, err)
		}
		plan, ok, err := planStream(m, br, opts)
		if ok && err == nil {
			return plan, func() {
				if err := br.Close(); err != nil {
					s.log.Warn("could not close a message's bytes after its FETCH", "uid", m.UID, "err", err)
				}
				s.fetchMem.Release(hold)
			}, nil
		}
		if cerr := br.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		s.fetchMem.Release(hold)
		if err != nil {
			return nil, nil, err
		}
	}
	release, err := s.loadWithin(ctx, m)
	return nil, release, err
}

// streamSections turns planStream on; tests turn it off to compare.
var streamSections = true

// loadWithin reads the bytes of m, a message the store left for later
// (mailstore.WantLargeRawLater), once the FETCH memory budget holds
// fetchCost times its size (Config.FetchMemory), and returns the release
// of that share, to be called once its response is written. Without the
// budget every connection held its own copies: eight FETCHes of
// BODY[2]<0.100> at once, of a 47 MB message anyone can mail, took the
// daemon from 35 to 910 MB.
func (s *Server) loadWithin(ctx context.Context, m *mailstore.Message) (func(), error) {
	hold := min(fetchCost*max(m.Size, 1), s.cfg.FetchMemory)
	if err := s.fetchMem.Acquire(ctx, hold); err != nil {
		return nil, fmt.Errorf("waiting to read message uid %d: %w", m.UID, err)
	}
	raw, err := m.LoadRaw(ctx)
	if err != nil {
		s.fetchMem.Release(hold)
		return nil, err
	}
	m.Raw = raw
	return func() {
		m.Raw = nil
		s.fetchMem.Release(hold)
	}, nil
}

// listedFetch turns fetchListed on; tests turn it off to compare.
var listedFetch = true

// formIndexes has a FETCH of ENVELOPE, BODYSTRUCTURE or both (with UID,
// FLAGS, INTERNALDATE or RFC822.SIZE or not) read the messages from the
// index messages_listing (WantListing) instead of a row of the table
// each, and the forms and structures rows; tests turn it off to compare.
var formIndexes = true

// fetchBlock gathers FETCH responses the session writes itself and hands
// them to the framer a block of holdBytes at a time, but for the first
// firstBlockBytes, which go out to the socket at once; flush goes first
// whenever anything else is written.
type fetchBlock struct {
	fc    *frameConn
	out   []byte
	first bool // the first firstBlockBytes went out
}

// firstBlockBytes is how much of a FETCH's output goes out to the socket
// first, as soon as it is made, instead of waiting for a block of
// holdBytes: a client that reads a response at a time (Python's imaplib
// takes about 3 µs a line, longer than the daemon takes to make one)
// starts on them while the daemon makes the rest. A block of 32 KiB of
// BODYSTRUCTURE responses, 300 messages, took 0.15 ms to make on a quiet
// machine and about 0.8 ms under load, and the client waited that long for
// its first byte.
const firstBlockBytes = 4 << 10

// add appends message m's response, written out once the block is full.
func (b *fetchBlock) add(seq uint32, m *mailstore.Message, opts *imap.FetchOptions) error {
	b.out = appendFetch(b.out, seq, m, opts)
	if !b.first && len(b.out) >= firstBlockBytes {
		b.first = true
		err := b.fc.writeResponses(b.out, true)
		b.out = b.out[:0]
		return err
	}
	if len(b.out) >= holdBytes {
		return b.flush()
	}
	return nil
}

func (b *fetchBlock) flush() error {
	if len(b.out) == 0 {
		return nil
	}
	err := b.fc.writeResponses(b.out, false)
	b.out = b.out[:0]
	return err
}

// fetchListed writes a FETCH of UID, FLAGS, INTERNALDATE and RFC822.SIZE
// alone (directItems without ENVELOPE and BODYSTRUCTURE) from the
// mailbox's listing in memory, kept by Applied as its UID list is: a block
// of messages is copied out under the mailbox mutex, then written. The
// store is read only for the sizes and dates of messages added since the
// listing was loaded, once each; a message it no longer holds is left out,
// as a FETCH reading the store leaves it out.
func (s *session) fetchListed(ctx context.Context, w *imapserver.FetchWriter, fc *frameConn, sel *selected, targets *refSet, opts *imap.FetchOptions) error {
	mb, v := sel.mb, sel.v
	type item struct {
		seq    uint32
		uid    imap.UID
		flags  []string
		size   int64 // -1: not known yet
		date   int64
		untold bool // flags has a keyword the client was not told of
	}
	const block = 512
	items := make([]item, 0, block)
	chunk := make([]ref, 0, block)
	out := &fetchBlock{fc: fc}
	flush := out.flush
	sizes := opts.RFC822Size || opts.InternalDate
	for next := imap.UID(0); ; {
		chunk = mb.refsFrom(v.st, targets, next, chunk[:0])
		if len(chunk) == 0 {
			break
		}
		next = chunk[len(chunk)-1].uid + 1 // below 2^32 - 1 (mailstore.UID)
		items = items[:0]
		var lo, hi imap.UID // the span of the messages whose size is not known
		mb.mu.Lock()
		k := 0
		for _, r := range chunk {
			// Both lists are in UID order.
			j, ok := slices.BinarySearch(mb.uids[k:], r.uid)
			k += j
			if !ok {
				continue // expunged since the command's start
			}
			it := item{seq: r.seq, uid: r.uid, size: int64(mb.sizes[k]), date: mb.dates[k]}
			if mb.sizes[k] == unknownSize {
				it.size = -1
				if sizes {
					if lo == 0 {
						lo = r.uid
					}
					hi = r.uid
				}
			}
			if opts.Flags {
				it.flags = v.withRecent(r.uid, mb.lists[mb.flags[k]])
				it.untold = v.told.missing(it.flags)
			}
			items = append(items, it)
		}
		mb.mu.Unlock()
		if lo != 0 {
			if err := s.fillListing(ctx, mb, sel.box, lo, hi); err != nil {
				if werr := flush(); werr != nil {
					return werr
				}
				return s.selectedError(sel, err)
			}
			mb.mu.Lock()
			for i := range items {
				if it := &items[i]; it.size < 0 {
					if k, ok := mb.find(it.uid); ok && mb.sizes[k] != unknownSize {
						it.size, it.date = int64(mb.sizes[k]), mb.dates[k]
					}
				}
			}
			mb.mu.Unlock()
		}
		for i := range items {
			it := &items[i]
			if it.size < 0 && sizes {
				// Not in the store any more, or of 4 GiB or more.
				size, date, ok, err := s.listingOf(ctx, sel, it.uid)
				if err != nil {
					if werr := flush(); werr != nil {
						return werr
					}
					return s.selectedError(sel, err)
				}
				if !ok {
					continue
				}
				it.size, it.date = size, date
			}
			m := mailstore.Message{UID: mailstore.UID(it.uid), Flags: it.flags, Size: it.size}
			if opts.InternalDate {
				m.InternalDate = time.UnixMilli(it.date)
			}
			if it.untold {
				if err := flush(); err != nil {
					return err
				}
				if err := s.tell(it.flags); err != nil {
					return err
				}
			}
			if validFlags(m.Flags) {
				if err := out.add(it.seq, &m, opts); err != nil {
					return err
				}
				continue
			}
			if err := flush(); err != nil {
				return err
			}
			if err := writeMessage(w.CreateMessage(it.seq), &m, nil, nil, opts, false, nil, nil); err != nil {
				return err
			}
		}
	}
	return flush()
}

// fillListing reads from the store, through box (of the listing's
// UIDVALIDITY), the sizes and dates the listing lacks for the messages
// with UIDs from lo to hi, and records them (they never change).
func (s *session) fillListing(ctx context.Context, mb *mailbox, box *mailstore.Selected, lo, hi imap.UID) error {
	type listed struct {
		uid        imap.UID
		size, date int64
	}
	var got []listed
	err := box.FetchForms(ctx, mailstore.UIDSet{{Start: mailstore.UID(lo), Stop: mailstore.UID(hi)}},
		mailstore.WantMetadataOnly|mailstore.WantListing, func(m *mailstore.Message) error {
			got = append(got, listed{imap.UID(m.UID), m.Size, m.InternalDate.UnixMilli()})
			return nil
		})
	if err != nil {
		return err
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	for _, g := range got {
		if k, ok := mb.find(g.uid); ok {
			mb.sizes[k], mb.dates[k] = packSize(g.size), g.date
		}
	}
	return nil
}

// listingOf reads one message's size and date from the store; ok is false
// when the store no longer holds it.
func (s *session) listingOf(ctx context.Context, sel *selected, uid imap.UID) (size, date int64, ok bool, err error) {
	err = sel.box.FetchForms(ctx, mailstore.UIDSet{{Start: mailstore.UID(uid), Stop: mailstore.UID(uid)}},
		mailstore.WantMetadataOnly|mailstore.WantListing, func(m *mailstore.Message) error {
			size, date, ok = m.Size, m.InternalDate.UnixMilli(), true
			return nil
		})
	return size, date, ok, err
}

// setsSeen reports whether opts fetch a body section without PEEK.
func setsSeen(opts *imap.FetchOptions) bool {
	for _, b := range opts.BodySection {
		if !b.Peek {
			return true
		}
	}
	for _, b := range opts.BinarySection {
		if !b.Peek {
			return true
		}
	}
	return false
}

// fetchWant says what to load for opts: the header alone when only
// top-level header sections are asked for.
func fetchWant(opts *imap.FetchOptions) mailstore.Want {
	var want mailstore.Want
	if opts.Envelope {
		want |= mailstore.WantEnvelope
	}
	if opts.BodyStructure != nil {
		want |= mailstore.WantStructure
	}
	for _, b := range opts.BodySection {
		if len(b.Part) > 0 && b.Specifier == imap.PartSpecifierMIME || len(b.Part) > 1 {
			// Whether the part is a message's body (messageBody), a
			// multipart's (bareHeaderSection), or within a forwarded
			// message (throughForwarded).
			want |= mailstore.WantStructure
		}
	}
	for _, b := range opts.BinarySection {
		if len(b.Part) > 1 {
			want |= mailstore.WantStructure // throughForwarded
		}
	}
	for _, b := range opts.BinarySectionSize {
		if len(b.Part) > 1 {
			want |= mailstore.WantStructure
		}
	}
	if len(opts.BinarySection) > 0 || len(opts.BinarySectionSize) > 0 {
		return want | mailstore.WantRaw
	}
	for _, b := range opts.BodySection {
		if len(b.Part) > 0 || (b.Specifier != imap.PartSpecifierHeader && len(b.HeaderFields) == 0 && len(b.HeaderFieldsNot) == 0) {
			return want | mailstore.WantRaw
		}
	}
	if len(opts.BodySection) > 0 {
		want |= mailstore.WantHeader
	}
	return want
}

// directFetch turns appendFetch on; tests turn it off to compare.
var directFetch = true

// directItems reports whether opts asks only for items appendFetch writes
// (UID, FLAGS, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODYSTRUCTURE), at
// least one.
func directItems(opts *imap.FetchOptions) bool {
	if (opts.BodyStructure != nil && !opts.BodyStructure.Extended) || len(opts.BodySection) > 0 || len(opts.BinarySection) > 0 ||
		len(opts.BinarySectionSize) > 0 || opts.ModSeq || opts.ChangedSince != 0 {
		return false
	}
	return opts.UID || opts.Flags || opts.InternalDate || opts.RFC822Size || opts.Envelope || opts.BodyStructure != nil
}

// validFlags reports whether go-imap would write every flag as it is (an
// atom, or an atom after one backslash), so appendFetch may too.
func validFlags(flags []string) bool {
	for _, f := range flags {
		if f == "" {
			return false
		}
		for i := 0; i < len(f); i++ {
			c := f[i]
			if c == '\\' && i == 0 {
				continue
			}
			if !isAtomChar(c) {
				return false
			}
		}
	}
	return true
}

// appendFetch appends m's FETCH response for opts (directItems) to b,
// byte for byte as writeMessage has go-imap write it, the envelope from
// its stored IMAP form and the body structure too: a FETCH of many messages then costs a row and an
// append each, with no decoding, encoding or locking per message. The
// framer sees it as it sees the library's output.
func appendFetch(b []byte, seq uint32, m *mailstore.Message, opts *imap.FetchOptions) []byte {
	b = append(b, "* "...)
	b = strconv.AppendUint(b, uint64(seq), 10)
	b = append(b, " FETCH ("...)
	sep := false
	item := func(name string) {
		if sep {
			b = append(b, ' ')
		}
		sep = true
		b = append(b, name...)
		b = append(b, ' ')
	}
	if opts.UID {
		item("UID")
		b = strconv.AppendUint(b, uint64(m.UID), 10)
	}
	if opts.Flags {
		item("FLAGS")
		b = append(b, '(')
		for i, f := range m.Flags {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, f...)
		}
		b = append(b, ')')
	}
	if opts.InternalDate {
		item("INTERNALDATE")
		b = append(b, '"')
		b = wireDate(m.InternalDate).AppendFormat(b, internalDateLayout)
		b = append(b, '"')
	}
	if opts.RFC822Size {
		item("RFC822.SIZE")
		b = strconv.AppendInt(b, m.Size, 10)
	}
	if opts.Envelope {
		item("ENVELOPE")
		b = append(b, m.EnvelopeWire...)
	}
	if opts.BodyStructure != nil {
		item("BODYSTRUCTURE")
		b = append(b, m.StructureWire...)
	}
	return append(b, ")\r\n"...)
}

// internalDateLayout is INTERNALDATE's date-time (RFC 9051 section 9), as
// go-imap writes it.
const internalDateLayout = "_2-Jan-2006 15:04:05 -0700"

// The dates INTERNALDATE can write: its year is four digits (RFC 9051
// section 9, date-year). APPEND takes any date-time, "31-Dec-9999 23:59:59
// -1259" included, which is in the year 10000 in UTC; and a command in the
// log carries any millisecond count.
var (
	firstWireDate = time.Date(1, time.January, 1, 0, 0, 0, 0, time.UTC)
	lastWireDate  = time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC)
)

// wireDate is t if INTERNALDATE can write it as it is (its year, in its
// zone, has four digits), and otherwise the nearest of firstWireDate and
// lastWireDate: Go writes the year 10000 with five digits and the year -1
// as "-001", which mbsync refuses ("unable to parse INTERNALDATE format",
// and the sync of the mailbox stops) and imaplib does not parse.
func wireDate(t time.Time) time.Time {
	if y := t.Year(); y >= 0 && y <= 9999 {
		return t
	}
	return clampDate(t)
}

// clampDate is t within firstWireDate and lastWireDate, in UTC (whose
// years they are: in a zone east of it, lastWireDate is in the year 10000).
func clampDate(t time.Time) time.Time {
	switch {
	case t.Before(firstWireDate):
		return firstWireDate
	case t.After(lastWireDate):
		return lastWireDate
	}
	return t.UTC()
}

// globalWire reports whether a stored BODYSTRUCTURE form may hold a
// message/global part, written as RFC 9051's body-type-msg, which a
// session that has not enabled IMAP4rev2 is given as a basic part
// (rev1Wire). A parameter that reads so costs its message a reading of
// the form, and nothing else.
func globalWire(b []byte) bool { return bytes.Contains(b, []byte(`"message" "global" `)) }

// decodeForms decodes the stored envelope and body structure m carries
// (nil for what it does not), and the values of them that opts asks for
// and that the library cannot write (swapForms): the envelopes' dates
// and the parts' MD5s (mimeform.DecodeEnvelopeDate,
// DecodeStructureForms). With rev1 (the session has not enabled
// IMAP4rev2) the structure is IMAP4rev1's, a message/global part a basic
// part (mimeform.Rev1Structure).
func decodeForms(m *mailstore.Message, opts *imap.FetchOptions, rev1 bool) (env *imap.Envelope, bs imap.BodyStructure, stored storedValues, err error) {
	if m.Envelope != nil {
		if env, stored.env, err = mimeform.DecodeEnvelopeDate(m.Envelope); err != nil {
			return nil, nil, storedValues{}, err
		}
		if !opts.Envelope {
			stored.env = nil
		}
	}
	if m.BodyStructure != nil {
		if opts.BodyStructure != nil {
			bs, stored.nested, stored.md5s, err = mimeform.DecodeStructureForms(m.BodyStructure, rev1)
			if !opts.BodyStructure.Extended {
				stored.md5s = nil // BODY: no extension data
			}
		} else {
			bs, err = mimeform.DecodeStructure(m.BodyStructure)
		}
		if err != nil {
			return nil, nil, storedValues{}, err
		}
	}
	return env, bs, stored, nil
}

// writeMessage writes one FETCH response: env and bs are m's, decoded. A
// write that fails still ends the response (rw.Close): the library holds
// the connection's encoder from CreateMessage until then, and a response
// left open kept it held, so that the conn's tagged reply after the error
// waited on it for good, as did the BYE of a server that stopped.
//
// With plan, the sections are written from it, streamed (planStream).
// With gp, a message/global part's sections are read as of a basic part
// (globalPaths).
func writeMessage(rw *imapserver.FetchResponseWriter, m *mailstore.Message, env *imap.Envelope, bs imap.BodyStructure, opts *imap.FetchOptions, seenSet bool,
	plan *streamPlan, gp globalPaths) (err error) {
	defer func() {
		if err != nil {
			_ = rw.Close()
		}
	}()
	if opts.UID {
		rw.WriteUID(imap.UID(m.UID))
	}
	if opts.Flags || seenSet {
		rw.WriteFlags(toFlags(m.Flags))
	}
	if opts.InternalDate {
		rw.WriteInternalDate(wireDate(m.InternalDate))
	}
	if opts.RFC822Size {
		rw.WriteRFC822Size(m.Size)
	}
	if opts.Envelope {
		rw.WriteEnvelope(env)
	}
	if opts.BodyStructure != nil {
		rw.WriteBodyStructure(bs)
	}
	if plan != nil {
		return writeStreamed(rw, opts, plan)
	}
	for _, sec := range opts.BodySection {
		b := []byte{}
		if q := gp.section(sec); q != nil {
			b = bodySection(m, q)
		}
		wc := rw.WriteBodySection(sec, int64(len(b)))
		if _, err := wc.Write(b); err != nil {
			return err
		}
		if err := wc.Close(); err != nil {
			return err
		}
	}
	for _, sec := range opts.BinarySection {
		b := []byte{}
		if p, ok := gp.part(sec.Part); ok {
			b = binarySection(m, p)
		}
		b = partial(b, sec.Partial)
		wc := rw.WriteBinarySection(sec, int64(len(b)))
		if _, err := wc.Write(b); err != nil {
			return err
		}
		if err := wc.Close(); err != nil {
			return err
		}
	}
	for _, sec := range opts.BinarySectionSize {
		var n int
		if p, ok := gp.part(sec.Part); ok {
			n = len(binarySection(m, p))
		}
		rw.WriteBinarySectionSize(sec, uint32(n))
	}
	return rw.Close()
}

// writeStreamed writes the sections of a message's FETCH response from
// plan, each literal streamPiece at a time, and ends the response.
func writeStreamed(rw *imapserver.FetchResponseWriter, opts *imap.FetchOptions, plan *streamPlan) error {
	for i, sec := range opts.BodySection {
		p := plan.body[i]
		off, k := window(p.n, sec.Partial)
		wc := rw.WriteBodySection(sec, k)
		if err := p.writeTo(wc, off, k); err != nil {
			return err
		}
		if err := wc.Close(); err != nil {
			return err
		}
	}
	for i, sec := range opts.BinarySection {
		p := plan.binary[i]
		off, k := window(p.n, sec.Partial)
		wc := rw.WriteBinarySection(sec, k)
		if err := p.writeTo(wc, off, k); err != nil {
			return err
		}
		if err := wc.Close(); err != nil {
			return err
		}
	}
	for i, sec := range opts.BinarySectionSize {
		rw.WriteBinarySectionSize(sec, uint32(plan.binarySize[i].n))
	}
	return rw.Close()
}

// splitWide splits off the BODY sections whose partial origin is beyond 32
// bits (wide): go-imap writes an origin back in 32 bits, so writeWide
// writes these. narrow is opts without them; opts itself when none is.
func splitWide(opts *imap.FetchOptions) (narrow *imap.FetchOptions, wide []*imap.FetchItemBodySection) {
	var rest []*imap.FetchItemBodySection
	for _, sec := range opts.BodySection {
		if sec.Partial != nil && sec.Partial.Offset > math.MaxUint32 {
			wide = append(wide, sec)
		} else {
			rest = append(rest, sec)
		}
	}
	if len(wide) == 0 {
		return opts, nil
	}
	n := *opts
	n.BodySection = rest
	return &n, wide
}

// writeWide writes message m's FETCH response when wide BODY sections are
// asked for (splitWide; RFC 9051's partial is number64): the library writes
// the response without them (narrow), the framer keeps it (capture), and
// the wide sections go before its closing parenthesis, each labelled with
// the origin asked for, whole: BODY[]<4294967296> {0}. RFC 9051 section 9
// gives the response's origin as number, 32 bits, which cannot name it;
// writing it back whole, as Dovecot does, is the one label that names what
// was asked for. Past the end of the section, the data is empty (RFC 9051
// section 6.4.5).
func writeWide(w *imapserver.FetchWriter, fc *frameConn, seq uint32, m *mailstore.Message, env *imap.Envelope, bs imap.BodyStructure,
	narrow *imap.FetchOptions, wide []*imap.FetchItemBodySection, seenSet bool, gp globalPaths) error {
	fc.capture()
	err := writeMessage(w.CreateMessage(seq), m, env, bs, narrow, seenSet, nil, gp)
	resp := fc.endCapture()
	if err != nil {
		return err
	}
	resp, ok := bytes.CutSuffix(resp, []byte(")\r\n"))
	if !ok || !bytes.HasPrefix(resp, []byte("* ")) {
		return fmt.Errorf("FETCH response of message %d: the library wrote %q, not one response", seq, resp)
	}
	for _, sec := range wide {
		if resp[len(resp)-1] != '(' {
			resp = append(resp, ' ')
		}
		resp = appendSectionName(resp, sec)
		b := []byte{}
		if q := gp.section(sec); q != nil {
			b = bodySection(m, q)
		}
		resp = append(resp, " {"...)
		resp = strconv.AppendInt(resp, int64(len(b)), 10)
		resp = append(resp, "}\r\n"...)
		resp = append(resp, b...)
	}
	resp = append(resp, ")\r\n"...)
	_, err = fc.Write(resp)
	return err
}

// appendSectionName appends sec's label in a FETCH response, as go-imap
// writes it (imapserver's writeSectionPart and WriteBodySection), with
// the partial's origin whole.
func appendSectionName(b []byte, sec *imap.FetchItemBodySection) []byte {
	b = append(b, "BODY["...)
	for i, n := range sec.Part {
		if i > 0 {
			b = append(b, '.')
		}
		b = strconv.AppendInt(b, int64(n), 10)
	}
	if len(sec.Part) > 0 && sec.Specifier != imap.PartSpecifierNone {
		b = append(b, '.')
	}
	b = append(b, sec.Specifier...)
	names := sec.HeaderFields
	switch {
	case len(sec.HeaderFields) > 0:
		b = append(b, ".FIELDS"...)
	case len(sec.HeaderFieldsNot) > 0:
		names = sec.HeaderFieldsNot
		b = append(b, ".FIELDS.NOT"...)
	}
	if sec.Specifier != imap.PartSpecifierNone && len(names) > 0 {
		b = append(b, " ("...)
		for i, name := range names {
			if i > 0 {
				b = append(b, ' ')
			}
			b = appendString(b, name)
		}
		b = append(b, ')')
	}
	b = append(b, ']')
	if sec.Partial != nil {
		b = append(b, '<')
		b = strconv.AppendInt(b, sec.Partial.Offset, 10)
		b = append(b, '>')
	}
	return b
}

// appendString appends s as an IMAP string: quoted, or a literal when it
// holds NUL, CR or LF (RFC 9051 section 4.3; UTF-8 is quoted, as the
// session has enabled IMAP4rev2).
func appendString(b []byte, s string) []byte {
	if strings.ContainsAny(s, "\x00\r\n") {
		b = append(b, '{')
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, "}\r\n"...)
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// raw returns the message bytes loaded: the whole message, or the header
// alone when only the header was loaded.
func raw(m *mailstore.Message) []byte {
	if m.Raw != nil {
		return m.Raw
	}
	return m.Header
}

// singlePart reports whether the message is served as one text part: not
// parsed as MIME (or beyond the parsing bounds), or not multipart.
func singlePart(m *mailstore.Message) bool {
	if mimeform.Status(m.Parse) != mimeform.Parsed {
		return true
	}
	if m.BodyStructure == nil {
		return false
	}
	bs, err := mimeform.DecodeStructure(m.BodyStructure)
	_, multi := bs.(*imap.BodyStructureMultiPart)
	return err == nil && bs != nil && !multi
}

// bodySection returns BODY[section]<partial>. The whole message, its header
// and its text are served byte for byte from the stored bytes; deeper
// sections are extracted with imapserver.ExtractBodySection. A message
// that is not MIME is one text part: BODY[1] is its text.
func bodySection(m *mailstore.Message, sec *imap.FetchItemBodySection) []byte {
	if sub, rest, ok := throughForwarded(m, sec.Part); ok {
		within := *sec
		within.Part = rest
		return bodySection(sub, &within)
	}
	b := raw(m)
	hl := min(int(m.HeaderLen), len(b))
	plain := len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0
	switch {
	case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierNone:
		return partial(b, sec.Partial)
	case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierText:
		return partial(b[hl:], sec.Partial)
	case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierHeader && plain:
		return partial(b[:hl], sec.Partial)
	case mimeform.Status(m.Parse) != mimeform.Parsed && len(sec.Part) == 1 && sec.Part[0] == 1 && sec.Specifier == imap.PartSpecifierNone:
		return partial(b[hl:], sec.Partial)
	case mimeform.Status(m.Parse) == mimeform.Unparsed:
		if sec.Specifier == imap.PartSpecifierHeader || sec.Specifier == imap.PartSpecifierMIME {
			return partial([]byte("\r\n"), sec.Partial)
		}
		return nil
	case mimeform.Status(m.Parse) == mimeform.Simplified && len(sec.Part) > 0 && (len(sec.Part) > 1 || sec.Part[0] != 1):
		// Served as one text/plain part (its BODYSTRUCTURE): no other
		// part exists. The library would look for it in the tree the
		// structure does not show, through every level of the path.
		return []byte{}
	case mimeform.Status(m.Parse) == mimeform.Simplified && len(sec.Part) > 0 &&
		(sec.Specifier == imap.PartSpecifierHeader || sec.Specifier == imap.PartSpecifierText):
		// HEADER, HEADER.FIELDS and TEXT of part 1, the one text/plain
		// part, which is no message/rfc822 part (RFC 9051 section
		// 6.4.5). Its MIME is the library's, from the message's tree,
		// as Dovecot answers it (docs/IMAP.md, "Odd messages, part by
		// part").
		return []byte{}
	case len(sec.Part) > 0 && (sec.Specifier == imap.PartSpecifierHeader || sec.Specifier == imap.PartSpecifierText) &&
		!isMessagePart(b, sec.Part):
		// HEADER, HEADER.FIELDS and TEXT after a part number name the
		// parts of a message/rfc822 part only (RFC 9051 section 6.4.5).
		return []byte{}
	}
	if q, ok := forwardedBody(m, sec); ok {
		return partial(bodySection(m, q), sec.Partial)
	}
	if out, ok := headerSection(m, sec, hl); ok {
		return partial(out, sec.Partial)
	}
	// The library reads the header as Parse does (mimeform.Lenient): a
	// line that is no field would make it give up on the whole message,
	// and counts toward no bound. The fields of the top level are given
	// as they came; a part's path is found through a Content-Type read as
	// the body structure reads it.
	read := mimeform.Lenient(b, len(sec.Part) > 0)
	if top, ok := mimeform.BoundedHeader(read); !ok {
		// The library parses the whole header for any section: one
		// beyond the bounds (a message stored before they were kept;
		// one parsed since is Simplified) gives the fields within them
		// and no part.
		if len(sec.Part) > 0 {
			return []byte{}
		}
		read = top
	}
	// The partial is cut here: the library's sum of origin and length
	// overflows near 2^63.
	whole := *sec
	whole.Partial = nil
	var out []byte
	if len(sec.Part) > 0 && !closed(read) {
		// A multipart cut short: its parts are read as the structure
		// reads them, closed, so that the last one keeps its last line
		// break (the library drops it at the end of the data), and
		// without the closing delimiters, which are not the message's.
		if mm := mimeform.Mend(read); mm.Cut() {
			out = mm.Own(imapserver.ExtractBodySection(bytes.NewReader(mm.Bytes), &whole))
		}
	}
	if out == nil {
		out = extractTop(read, &whole)
	}
	if out == nil && len(sec.Part) > 0 {
		out = sectionAgain(read, func(b []byte) []byte { return imapserver.ExtractBodySection(bytes.NewReader(b), &whole) })
	}
	if out == nil {
		out = []byte{}
	}
	return partial(out, sec.Partial)
}

// headerSection returns BODY[n.HEADER], BODY[n.TEXT] and BODY[n.MIME] as
// the message's bytes hold them, where the library would write them
// again: a message's header is every line up to the blank line that ends
// it, a line that is no field included, and without a blank line when it
// has none (mimeform.HeaderLength), as BODY[HEADER] is served and as
// Dovecot serves them (docs/IMAP.md, "Odd messages, part by part"). The
// library read a header up to its first line that is no field, dropping
// that line and taking the fields after it for text, and wrote a header
// without a blank line with one. n.HEADER and n.TEXT are those of the
// message/rfc822 part n (bodySection has refused any other part); n.MIME
// is the header of the message whose body part n is, when it is one (the
// message itself, or a message/rfc822 part, whose body is no multipart):
// a multipart's part has a header of its own, within the multipart,
// which the library extracts. n.HEADER.FIELDS and n.HEADER.FIELDS.NOT
// are picked from n.HEADER (headerFields). ok is false for a section it
// does not serve: a top-level one, the MIME header of a multipart's part
// that ends with a blank line; one that ends without is served as the
// message holds it (bareHeader).
func headerSection(m *mailstore.Message, sec *imap.FetchItemBodySection, hl int) (out []byte, ok bool) {
	if len(sec.Part) == 0 {
		return nil, false
	}
	if len(sec.HeaderFields) > 0 || len(sec.HeaderFieldsNot) > 0 {
		if sec.Specifier != imap.PartSpecifierHeader {
			return nil, false
		}
		h, _ := headerSection(m, &imap.FetchItemBodySection{Part: sec.Part, Specifier: imap.PartSpecifierHeader}, hl)
		return headerFields(h, sec), true
	}
	switch sec.Specifier {
	case imap.PartSpecifierHeader, imap.PartSpecifierText:
		b := bodySection(m, &imap.FetchItemBodySection{Part: sec.Part})
		n := mimeform.HeaderLength(b)
		if sec.Specifier == imap.PartSpecifierHeader {
			return b[:n], true
		}
		return b[n:], true
	case imap.PartSpecifierMIME:
		if boundary, k, body, ok := bareHeaderSection(m, sec.Part); ok {
			// A multipart's part: its header as the message holds it
			// when it ends without a blank line (bareHeader), else the
			// library's.
			if h, ok := bareHeader(bytes.NewReader(bodySection(m, body)), boundary, k); ok {
				return h, true
			}
			return nil, false
		}
		if mimeform.Status(m.Parse) != mimeform.Parsed || !messageBody(m, sec.Part) {
			return nil, false
		}
		if len(sec.Part) == 1 {
			return raw(m)[:hl], true
		}
		return bodySection(m, &imap.FetchItemBodySection{Part: sec.Part[:len(sec.Part)-1], Specifier: imap.PartSpecifierHeader}), true
	}
	return nil, false
}

// headerFields is HEADER.FIELDS or HEADER.FIELDS.NOT of sec from h, a
// message's header as headerSection serves it: the fields the library
// picks from it, each line that is no field left out (mimeform.Lenient),
// so that a field after such a line is found, as in the header of the
// message itself; a header without a blank line is read as if it had
// one, which the answer ends with, as every HEADER.FIELDS answer does.
func headerFields(h []byte, sec *imap.FetchItemBodySection) []byte {
	if !bytes.HasSuffix(h, []byte("\n")) {
		h = append(h[:len(h):len(h)], "\r\n"...)
	}
	if n := mimeform.HeaderLength(h); n == len(h) && !bytes.HasSuffix(h, []byte("\n\n")) && !bytes.HasSuffix(h, []byte("\n\r\n")) {
		h = append(h[:len(h):len(h)], "\r\n"...)
	}
	fields := *sec
	fields.Part, fields.Partial = nil, nil
	out := extractTop(mimeform.Lenient(h, false), &fields)
	if out == nil {
		return []byte{}
	}
	return out
}

// forwardedBody returns BODY[q.TEXT] for sec, BODY[q.1] of a
// message/rfc822 part q whose body is no multipart: that body is the
// message's text (RFC 9051 section 6.4.5), its bytes after the header
// BODY[q.HEADER] serves, as the structure counts them. ok is false for
// any other section. The library read the header otherwise: of a
// forwarded message of no field ("text\r\nmore text\r\n"), it took the
// first line for the header and served the rest as BODY[q.1], where
// BODY[q.HEADER] is the whole and BODY[q.TEXT] empty.
func forwardedBody(m *mailstore.Message, sec *imap.FetchItemBodySection) (*imap.FetchItemBodySection, bool) {
	n := len(sec.Part)
	if n < 2 || sec.Part[n-1] != 1 || sec.Specifier != imap.PartSpecifierNone ||
		mimeform.Status(m.Parse) != mimeform.Parsed || !messageBody(m, sec.Part) {
		return nil, false
	}
	return &imap.FetchItemBodySection{Part: sec.Part[:n-1], Specifier: imap.PartSpecifierText}, true
}

// messageBody reports whether part is the body of a message, the one
// part of a message whose body is no multipart (the message itself for
// part 1, or the message/rfc822 part the path names before it), by m's
// body structure.
func messageBody(m *mailstore.Message, part []int) bool {
	if m.BodyStructure == nil {
		return false
	}
	bs, err := mimeform.DecodeStructure(m.BodyStructure)
	if err != nil {
		return false
	}
	// The parts of a message are its multipart's, or its body alone as
	// part 1 (RFC 9051 section 6.4.5); a message/rfc822 part's are those
	// of its message.
	inner := bs // the message whose parts the next number counts
	body := false
	for _, n := range part {
		if inner == nil {
			return false
		}
		if mp, multi := inner.(*imap.BodyStructureMultiPart); multi {
			if n < 1 || n > len(mp.Children) {
				return false
			}
			bs, body = mp.Children[n-1], false
		} else {
			if n != 1 {
				return false
			}
			bs, body = inner, true
		}
		inner = nil
		switch x := bs.(type) {
		case *imap.BodyStructureMultiPart:
			inner = x
		case *imap.BodyStructureSinglePart:
			if x.MessageRFC822 != nil {
				inner = x.MessageRFC822.BodyStructure
			}
		}
	}
	return body
}

// closed reports whether b ends with a closing delimiter line ("--B--"
// and white space), so that no multipart of it can be cut short (the
// outermost one ends there): only a message that does not pays for the
// walk that finds the multiparts cut short (mimeform.MendedCut).
func closed(b []byte) bool {
	b = bytes.TrimRight(b, " \t\r\n")
	line := b[bytes.LastIndexByte(b, '\n')+1:]
	return len(line) > 4 && bytes.HasPrefix(line, []byte("--")) && bytes.HasSuffix(line, []byte("--"))
}

// sectionAgain extracts a part the library did not find in read (the
// message as mimeform.Lenient gives it) from the message mended for it
// (mimeform.Mend: the parts' types written as the structure reads them,
// a multipart cut short closed, a part of fields alone given the blank
// line the library reads its header up to), without the bytes the
// mending added (Mending.Own). Only a section not found pays for the
// walk: a found one is never looked for again.
func sectionAgain(read []byte, extract func([]byte) []byte) []byte {
	if mm := mimeform.Mend(read); !bytes.Equal(mm.Bytes, read) {
		if out := extract(mm.Bytes); out != nil {
			return mm.Own(out)
		}
	}
	return nil
}

// binarySection returns BINARY[part] without its partial: the decoded
// content; for a message that is not MIME, its bytes.
func binarySection(m *mailstore.Message, part []int) []byte {
	if sub, rest, ok := throughForwarded(m, part); ok {
		return binarySection(sub, rest)
	}
	b := raw(m)
	hl := min(int(m.HeaderLen), len(b))
	if mimeform.Status(m.Parse) != mimeform.Parsed {
		switch {
		case len(part) == 0:
			return b
		case len(part) == 1 && part[0] == 1:
			return b[hl:]
		}
		return []byte{} // one part: no other exists
	}
	if len(part) > 0 && identityTransfer(*partHeader(b, part)) {
		// The part's bytes, as BODY[part] serves them: a multipart cut
		// short inside it is read closed and served without the closing
		// delimiters, which are not the message's (extractBinary served
		// them).
		return bodySection(m, &imap.FetchItemBodySection{Part: part})
	}
	read := mimeform.Lenient(b, true)
	out := extractBinary(read, part)
	if out == nil && len(part) > 0 {
		out = sectionAgain(read, func(b []byte) []byte { return extractBinary(b, part) })
	}
	if out == nil && len(part) > 0 && strings.EqualFold(mimeform.TransferEncoding(partHeader(b, part).Get("Content-Transfer-Encoding")), "base64") {
		// Base64 with its padding missing or a stray character: the
		// library gives up, and RFC 2045 section 6.8 reads past both.
		out = mimeform.DecodeBase64(bodySection(m, &imap.FetchItemBodySection{Part: part}))
	}
	if out == nil && len(part) == 1 && part[0] == 1 && singlePart(m) {
		return b[hl:]
	}
	if out == nil {
		out = []byte{}
	}
	return out
}

// extractBinary returns BINARY[part] of read (the message as
// mimeform.Lenient gives it), or nil when the part does not exist or its
// content does not decode. It undoes the part's Content-Transfer-Encoding
// and nothing else (RFC 3516 section 4.2): go-imap's ExtractBinarySection
// also converts text parts to UTF-8 from the charset their Content-Type
// names, so a windows-1252 or ISO-8859-1 part came out in bytes other than
// those BODYSTRUCTURE describes, and one in a charset go-message does not
// know came out empty. BINARY[] is the header and the decoded body.
func extractBinary(read []byte, part []int) []byte {
	var header textproto.Header
	var prefix []byte
	if len(part) == 0 {
		br := bufio.NewReader(bytes.NewReader(read))
		h, err := textproto.ReadHeader(br)
		if err != nil {
			return nil
		}
		header = h
		prefix = imapserver.ExtractBodySection(bytes.NewReader(read), &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader})
		if prefix == nil {
			return nil
		}
	} else {
		mh := imapserver.ExtractBodySection(bytes.NewReader(read), &imap.FetchItemBodySection{Part: part, Specifier: imap.PartSpecifierMIME})
		if mh == nil {
			return nil
		}
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(append(mh, "\r\n"...))))
		if err != nil {
			return nil
		}
		header = h
	}
	sec := &imap.FetchItemBodySection{Part: part}
	if len(part) == 0 {
		sec.Specifier = imap.PartSpecifierText
	}
	body := imapserver.ExtractBodySection(bytes.NewReader(read), sec)
	if body == nil {
		return nil
	}
	decoded, ok := decodeTransfer(header, body)
	if !ok {
		return nil
	}
	return append(prefix, decoded...)
}

// identityTransfer reports whether decodeTransfer gives the body of a
// part whose MIME header is header as it is.
func identityTransfer(header textproto.Header) bool {
	if mt, _ := mimeform.ContentType(header); strings.HasPrefix(mt, "multipart/") {
		return true
	}
	switch strings.ToLower(mimeform.TransferEncoding(header.Get("Content-Transfer-Encoding"))) {
	case "7bit", "8bit", "binary", "":
		return true
	}
	return false
}

// decodeTransfer undoes the Content-Transfer-Encoding of header on body:
// none for a multipart (RFC 2045 section 6.4 allows it none, and
// go-message ignores one in the wild), base64 as RFC 2045 section 6.8
// reads it (mimeform.DecodeBase64, as for a part the library gives up
// on), quoted-printable. ok is false for an encoding it does not know or
// quoted-printable that does not decode.
func decodeTransfer(header textproto.Header, body []byte) (out []byte, ok bool) {
	if mt, _ := mimeform.ContentType(header); strings.HasPrefix(mt, "multipart/") {
		return body, true
	}
	switch strings.ToLower(mimeform.TransferEncoding(header.Get("Content-Transfer-Encoding"))) {
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		return out, err == nil
	case "base64":
		return mimeform.DecodeBase64(body), true
	case "7bit", "8bit", "binary", "":
		return body, true
	}
	return nil, false
}

func partial(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset >= int64(len(b)) {
		return []byte{}
	}
	end := int64(len(b))
	if p.Size >= 0 && p.Size < end-p.Offset { // not p.Offset+p.Size, which overflows near 2^63
		end = p.Offset + p.Size
	}
	return b[p.Offset:end]
}

// storeUIDs is set in the store's type.
func storeUIDs(set imap.UIDSet) mailstore.UIDSet {
	out := make(mailstore.UIDSet, len(set))
	for i, r := range set {
		out[i] = mailstore.UIDRange{Start: mailstore.UID(r.Start), Stop: mailstore.UID(r.Stop)}
	}
	return out
}

// imapUIDs is uids in go-imap's type.
func imapUIDs(uids []mailstore.UID) []imap.UID {
	out := make([]imap.UID, len(uids))
	for i, u := range uids {
		out[i] = imap.UID(u)
	}
	return out
}
