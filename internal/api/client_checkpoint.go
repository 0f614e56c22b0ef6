package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"cspool/internal/entry"
	"cspool/internal/spool"
	"cspool/internal/termtext"
)

// maxCheckpoint bounds the checkpoint the client accepts in a download:
// above the largest a server accepts (MaxCheckpointBodyLimit).
const maxCheckpoint = 1 << 30

var _ [maxCheckpoint - MaxCheckpointBodyLimit]struct{} // fails to compile if below

// PutCheckpoint uploads cp as the newest checkpoint of the client's user and
// asks the server to delete every entry at or before cp.Pos except those at
// the positions in keep (in any order; duplicates are ignored). An error
// matches spool.ErrStaleCheckpoint (409) when a checkpoint at cp.Pos or
// later is already stored; invalid arguments (cp.Pos 0 or beyond the head,
// a kept position 0 or beyond cp.Pos) give ErrBadRequest (400).
func (c *Client) PutCheckpoint(ctx context.Context, cp spool.Checkpoint, keep []uint64) (spool.CompactStats, error) {
	return c.PutCheckpointFrom(ctx, cp.Pos, io.NewSectionReader(bytes.NewReader(cp.Data), 0, int64(len(cp.Data))), keep)
}

// PutCheckpointFrom is PutCheckpoint with the checkpoint at position pos
// read from data, from its start to its Size, without holding it: once to
// hash the request's body for its signature, then as the body is sent
// (and again if it is sent again). The kept positions are written before it
// (EncodeCheckpoint's framing) without copying it.
func (c *Client) PutCheckpointFrom(ctx context.Context, pos uint64, data *io.SectionReader, keep []uint64) (spool.CompactStats, error) {
	return c.putCheckpoint(ctx, pos, data, keep, entry.Newest)
}

// putCheckpoint is PutCheckpointFrom saying that the device reads entry
// formats up to reads (docs/API.md §5); 0 says nothing, as devices built
// before format 3 did.
func (c *Client) putCheckpoint(ctx context.Context, pos uint64, data *io.SectionReader, keep []uint64, reads int) (spool.CompactStats, error) {
	op := fmt.Sprintf("storing checkpoint of %s at %d", c.user, pos)
	if c.user == "" {
		return spool.CompactStats{}, &Error{Op: op, Kind: ErrBadRequest, Msg: "client has no user name"}
	}
	keep = slices.Clone(keep)
	slices.Sort(keep)
	keep = slices.Compact(keep)
	head, err := appendKeep(nil, keep)
	if err != nil {
		return spool.CompactStats{}, &Error{Op: op, Kind: ErrBadRequest, Msg: err.Error()}
	}
	size := data.Size()
	open := func() io.Reader { return io.MultiReader(bytes.NewReader(head), io.NewSectionReader(data, 0, size)) }
	h := sha256.New()
	if _, err := io.Copy(h, open()); err != nil {
		return spool.CompactStats{}, &Error{Op: op, Kind: ErrBadRequest, Msg: "reading the checkpoint: " + err.Error(), Err: err}
	}
	body := &requestBody{size: int64(len(head)) + size, open: open}
	h.Sum(body.hash[:0])
	q := url.Values{"pos": {strconv.FormatUint(pos, 10)}}
	if reads != 0 {
		q.Set(ReadsParam, strconv.Itoa(reads))
	}
	resp, err := c.sendBody(ctx, op, http.MethodPut, "/v1/users/"+c.user+"/checkpoint", q, body, CheckpointContentType)
	if err != nil {
		return spool.CompactStats{}, err
	}
	defer resp.Body.Close()
	var res compactStats
	if err := decodeJSON(resp.Body, &res); err != nil || res.Deleted < 0 || res.Bytes < 0 || res.Kept < 0 {
		return spool.CompactStats{}, &Error{Op: op, Status: resp.StatusCode, Kind: ErrProtocol, Msg: fmt.Sprintf("bad answer %+v", res), Err: err}
	}
	return spool.CompactStats{Deleted: res.Deleted, Bytes: res.Bytes, Kept: res.Kept}, nil
}

// Checkpoint downloads the newest checkpoint of the client's user into
// memory. An error matches spool.ErrNoCheckpoint when the user has none.
func (c *Client) Checkpoint(ctx context.Context) (spool.Checkpoint, error) {
	var buf bytes.Buffer
	pos, _, err := c.CheckpointTo(ctx, &buf)
	if err != nil {
		return spool.Checkpoint{}, err
	}
	return spool.Checkpoint{Pos: pos, Data: buf.Bytes()}, nil
}

// CheckpointTo downloads the newest checkpoint of the client's user into w
// as it arrives, and returns its position and size: a device bootstraps
// from a checkpoint of any size without holding it (syncer writes it to a
// file). It is at most 1 GiB; an error matches spool.ErrNoCheckpoint when
// the user has none. On an error w may hold part of it.
func (c *Client) CheckpointTo(ctx context.Context, w io.Writer) (uint64, int64, error) {
	op := "reading checkpoint of " + c.user
	// Bounded as a read's answer is (readLog): the headers within
	// c.stall, no pause in the body longer than that, and past it an
	// average of c.rate. Before, a spool that sent the headers and then
	// nothing, or a byte a minute, held a new device's first sync for
	// good, with no error to show.
	ctx, pace := c.pace(ctx, op, "the spool at "+c.base, c.stall)
	defer pace.done()
	stalled := pace.fail
	resp, err := c.do(ctx, op, http.MethodGet, "/v1/users/"+c.user+"/checkpoint", nil, nil)
	if err != nil {
		return 0, 0, stalled(err)
	}
	defer resp.Body.Close()
	pace.headers()
	protoErr := func(msg string, err error) error {
		return &Error{Op: op, Status: resp.StatusCode, Kind: ErrProtocol, Msg: msg, Err: err}
	}
	if ct := resp.Header.Get("Content-Type"); !isMediaType(ct, CheckpointContentType) {
		return 0, 0, protoErr(fmt.Sprintf("unexpected Content-Type %q%s", termtext.Short(ct, 64), passedOnText), nil)
	}
	pos, err := strconv.ParseUint(resp.Header.Get("Cspool-Checkpoint-Pos"), 10, 64)
	if err != nil || pos == 0 {
		return 0, 0, protoErr("missing or bad Cspool-Checkpoint-Pos"+passedOnText, nil)
	}
	if resp.ContentLength > maxCheckpoint {
		return 0, 0, protoErr(fmt.Sprintf("checkpoint of %d bytes exceeds %d", resp.ContentLength, maxCheckpoint), nil)
	}
	hw := &headWriter{w: w}
	body := pace.body(resp.Body)
	n, err := io.Copy(hw, &bodyReader{r: io.LimitReader(body, maxCheckpoint+1)})
	var be *bodyError
	if errors.As(err, &be) {
		return 0, 0, stalled(&Error{Op: op, Status: resp.StatusCode, Kind: ErrTransport, Msg: "reading response body", Err: be.err})
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s: writing it: %w", op, err)
	}
	if n > maxCheckpoint {
		return 0, 0, protoErr(fmt.Sprintf("checkpoint exceeds %d bytes", maxCheckpoint), nil)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return 0, 0, &Error{Op: op, Status: resp.StatusCode, Kind: ErrTransport, Msg: "truncated checkpoint"}
	}
	// Without a length (a proxy that passed the body on to its
	// connection's end) a cut is told by the sealed entry's own length.
	if want, short := entry.CutShort(hw.head, n); resp.ContentLength < 0 && short {
		msg := fmt.Sprintf("truncated checkpoint: %d bytes of the %d its header gives", n, want)
		if want == 0 {
			msg = fmt.Sprintf("truncated checkpoint: %d bytes, not even its header", n)
		}
		return 0, 0, &Error{Op: op, Status: resp.StatusCode, Kind: ErrTransport, Msg: msg}
	}
	return pos, n, nil
}

// headWriter writes to w and keeps the first entry.MaxHeaderLen bytes.
type headWriter struct {
	w    io.Writer
	head []byte
}

func (h *headWriter) Write(p []byte) (int, error) {
	if k := entry.MaxHeaderLen - len(h.head); k > 0 {
		h.head = append(h.head, p[:min(k, len(p))]...)
	}
	return h.w.Write(p)
}

// bodyReader marks the errors of reading a response body, to tell them
// from the errors of writing what was read.
type bodyReader struct{ r io.Reader }

type bodyError struct{ err error }

func (e *bodyError) Error() string { return e.err.Error() }

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err}
	}
	return n, err
}
