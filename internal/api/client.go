package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/termtext"
)

// maxEntry bounds one entry the client accepts in a read response unless
// SetMaxEntry gives a bound of the client's own.
const maxEntry = 1 << 30

// entryTooLargeText marks the error of a read whose entry is larger than
// the client takes (Hint).
const entryTooLargeText = "more than this device takes"

// readCountCap and readBytesCap are the server's caps on max_count and
// max_bytes (docs/API.md §3): the most a read response holds when the
// client asks for no bound.
const (
	readCountCap = 10000
	readBytesCap = 64 << 20
)

// readStall is how long a read's answer may pause (beyond its long-poll
// wait, before the headers) before the client gives it up (Client.stall).
const readStall = 2 * time.Minute

// errStalled: a read's answer paused longer than Client.stall.
var errStalled = errors.New("the spool stopped sending")

// readRate is the least average rate, in bytes a second, at which a read's
// body must come once it has taken longer than Client.stall: a spool that
// sends a byte now and then, each before the stall bound, held the read
// (and the device's sync) for as long as it liked, with nothing logged.
const readRate = 1024

// errSlow: a read's answer came slower than readRate.
var errSlow = errors.New("the spool sends too slowly")

// progressReader calls progress after every read that returned bytes,
// with their count.
type progressReader struct {
	r        io.Reader
	progress func(n int)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.progress(n)
	}
	return n, err
}

// paced bounds the time of an answer from the spool: its headers within
// a first bound, no pause in its body longer than Client.stall, and past
// that an average of Client.rate. A spool that sends headers and then
// nothing, or a byte a minute, would otherwise hold a device's sync for
// good, with no error to show. Made by Client.pace, for one request.
type paced struct {
	c      *Client
	op     string
	who    string // the spool, as a stall's error names it
	ctx    context.Context
	cancel context.CancelCauseFunc
	stall  *time.Timer
	got    int64 // bytes of the body so far
	began  time.Time
}

// pace bounds the answer to the request op makes with ctx (the context it
// returns): nothing from the spool (who, in the error) for first is a
// transport error. The caller defers done.
func (c *Client) pace(ctx context.Context, op, who string, first time.Duration) (context.Context, *paced) {
	p := &paced{c: c, op: op, who: who}
	p.ctx, p.cancel = context.WithCancelCause(ctx)
	p.stall = time.AfterFunc(first, func() { p.cancel(errStalled) })
	return p.ctx, p
}

func (p *paced) done() {
	p.stall.Stop()
	p.cancel(nil)
}

// fail turns err into the transport error of a stall or a drip when the
// pace ended the request, else returns it.
func (p *paced) fail(err error) error {
	switch cause := context.Cause(p.ctx); {
	case errors.Is(cause, errStalled):
		return &Error{Op: p.op, Kind: ErrTransport, Msg: fmt.Sprintf("%s sent nothing for %v", p.who, p.c.stall), Err: errStalled}
	case errors.Is(cause, errSlow):
		return &Error{Op: p.op, Kind: ErrTransport, Err: errSlow,
			Msg: fmt.Sprintf("the spool at %s sent %d bytes in %v, slower than %d bytes a second", p.c.base, p.got, time.Since(p.began).Round(time.Second), p.c.rate)}
	}
	return err
}

// headers notes that the answer's headers came: from now on the body
// may pause no longer than Client.stall.
func (p *paced) headers() { p.stall.Reset(p.c.stall) }

// body reads the answer's body r under the pace, from now.
func (p *paced) body(r io.Reader) io.Reader {
	p.began = time.Now()
	return &progressReader{r: r, progress: func(n int) {
		p.stall.Reset(p.c.stall)
		p.got += int64(n)
		// Past the stall bound, the body must have come at c.rate on
		// average: a byte now and then keeps the stall bound away.
		if took := time.Since(p.began); took > p.c.stall && took > p.c.stall+time.Duration(p.got*int64(time.Second)/p.c.rate) {
			p.cancel(errSlow)
		}
	}}
}

// Client calls the API as one user (or as the spool, for appends). It is
// safe for concurrent use.
type Client struct {
	base string // scheme://host[:port], no trailing slash
	user string
	key  *keys.SecretKey
	hc   *http.Client
	now  func() time.Time
	// stall bounds a pause in a read's answer (readStall).
	stall time.Duration
	// rate is the least average rate of a read's body past stall
	// (readRate).
	rate int64

	// What the server said of its clock when it refused a timestamp: the
	// difference between its clock and ours (nanoseconds), and the earliest
	// timestamp it accepted then (Unix seconds).
	offset   atomic.Int64
	earliest atomic.Int64
	// budget is the last HeaderBudget the server sent; nil: none yet.
	budget atomic.Pointer[Budget]
	// quota is the last read answer's HeaderQuota; nil: none.
	quota atomic.Pointer[Quota]
	// maxEntry bounds one entry of a read (SetMaxEntry); 0: the
	// constant maxEntry.
	maxEntry atomic.Int64
	// readBuf is the read buffer of a read's answer, kept for the next
	// read (an entry's bytes are copied out of it): a device's reads
	// one after the other took 64 KB each.
	readBuf atomic.Pointer[bufio.Reader]
}

// SetMaxEntry bounds the size of one entry the client takes in a read to
// n bytes (at most the 1 GiB it takes otherwise; n <= 0 restores that).
// A read whose next entry is announced larger fails before its bytes are
// read, with an ErrProtocol error naming the spool, the entry's position
// and its size, whatever the spool sends after: the device stops before
// the entry, holding no more of it than the frame's length.
func (c *Client) SetMaxEntry(n int64) {
	c.maxEntry.Store(min(max(n, 0), maxEntry))
}

// entryBound is the bound SetMaxEntry set, or maxEntry.
func (c *Client) entryBound() uint64 {
	if n := c.maxEntry.Load(); n > 0 {
		return uint64(n)
	}
	return maxEntry
}

// Budget is a key's nonce budget as the server states it (HeaderBudget,
// docs/API.md §2).
type Budget struct {
	Requests int           // at most this many requests of the key held at once
	Window   time.Duration // each held this long after its timestamp
	Held     int           // how many the key's requests held at the answer
}

// Budget returns the nonce budget of this client's key that the server
// last stated, with how much of it was held then: at most requests held
// at once, each for window. ok is false until a server's answer carried
// one (a server of an earlier release sends none).
func (c *Client) Budget() (requests int, window time.Duration, held int, ok bool) {
	b := c.budget.Load()
	if b == nil {
		return 0, 0, 0, false
	}
	return b.Requests, b.Window, b.Held, true
}

// learnBudget keeps resp's HeaderBudget, if it has one of the right form
// within bounds (the spool is not trusted: a value beyond them is
// ignored).
func (c *Client) learnBudget(resp *http.Response) {
	v := resp.Header.Get(HeaderBudget)
	if v == "" {
		return
	}
	nw, hs, ok := strings.Cut(v, "; held=")
	if !ok {
		return
	}
	ns, ss, ok := strings.Cut(nw, "/")
	if !ok {
		return
	}
	n, err1 := strconv.ParseUint(ns, 10, 31)
	secs, err2 := strconv.ParseUint(ss, 10, 31)
	held, err3 := strconv.ParseUint(hs, 10, 31)
	if err1 != nil || err2 != nil || err3 != nil || n == 0 || secs == 0 || secs > maxBudgetWindow || held > n {
		return
	}
	c.budget.Store(&Budget{Requests: int(n), Window: time.Duration(secs) * time.Second, Held: int(held)})
}

// maxBudgetWindow bounds the window of a HeaderBudget the client takes, in
// seconds.
const maxBudgetWindow = 3600

// checkBaseURL refuses a spool server URL that is not http(s)://HOST[:PORT],
// and says what to write for the usual slips: no scheme
// ("spool.example.org:3999", which url.Parse takes for a path or a
// scheme), and a path or a query, which the API's requests would drop.
func checkBaseURL(baseURL string) error {
	if hidden := termtext.WithoutUserinfo(baseURL); hidden != baseURL {
		// A name and password (which may hold "/" or ":"): not quoted,
		// the errors being logged; and never sent, the requests'
		// Authorization being their signature.
		return fmt.Errorf("spool server URL %q has a name or password in it: the spool server takes none (each request is signed with the user's key); leave them out", hidden)
	}
	if !strings.Contains(baseURL, "://") {
		host := strings.TrimPrefix(strings.TrimRight(baseURL, "/"), "//")
		if host != "" && !strings.ContainsAny(host, "/?# ") {
			return fmt.Errorf("spool server URL %q has no scheme: write https://%s, or http://%s for a server without TLS", baseURL, host, host)
		}
		return fmt.Errorf("spool server URL %q: want http(s)://HOST[:PORT]", baseURL)
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return fmt.Errorf("spool server URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("spool server URL %q: want http(s)://HOST[:PORT]", baseURL)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("spool server URL %q has a path or query after the host: the spool server's API is at its root; write %s://%s", baseURL, u.Scheme, u.Host)
	}
	return nil
}

// NewClient returns a client of the server at baseURL (http:// or https://,
// no path), acting as user with key. hc nil means an http.Client whose
// connections notice a dead path within 30 s (dial.go); else hc's
// transport decides TLS and connection settings.
func NewClient(baseURL, user string, key *keys.SecretKey, hc *http.Client) (*Client, error) {
	if err := checkBaseURL(baseURL); err != nil {
		return nil, err
	}
	u, _ := url.Parse(baseURL)
	if user != "" {
		if err := keys.CheckUserName(user); err != nil {
			return nil, fmt.Errorf("spool client: %w", err)
		}
	}
	if key == nil {
		return nil, errors.New("spool client: no key")
	}
	if hc == nil {
		hc = &http.Client{Transport: sharedTransport()}
	}
	base := u.Scheme + "://" + u.Host
	if hc.CheckRedirect == nil {
		own := *hc
		own.CheckRedirect = refuseRedirect(base)
		hc = &own
	}
	return &Client{base: base, user: user, key: key, hc: hc, now: time.Now, stall: readStall, rate: readRate}, nil
}

// RedirectError: the spool answered a request with a redirect (HTTP 3xx),
// which the client does not follow. The API is never redirected (docs/API.md
// §1): a redirect comes from something else at the spool's address (a web
// server sending http:// to https://, a server that moved), or from a spool
// sending the device's requests elsewhere, in a loop or to another host.
type RedirectError struct {
	Base     string // the spool's URL
	Status   int    // the redirect's status
	Location string // where it sends the request
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("the spool at %s answered HTTP %d, redirecting to %s: a redirect is not followed", e.Base, e.Status, e.Location)
}

// refuseRedirect is a CheckRedirect that follows no redirect (RedirectError).
func refuseRedirect(base string) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, _ []*http.Request) error {
		status := 0
		if req.Response != nil {
			status = req.Response.StatusCode
		}
		return &RedirectError{Base: base, Status: status, Location: req.URL.Redacted()}
	}
}

// Read returns the entries after position after, at most maxCount entries
// and about maxBytes of data (zero or less: the server's defaults), and the
// log's head. With wait > 0 and nothing to read, the server holds the
// request up to wait (whole seconds, capped by the server) for new entries.
// A device that must notice compactions uses ReadLog.
func (c *Client) Read(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration) ([]spool.Entry, uint64, error) {
	lr, err := c.readLog(ctx, after, maxCount, maxBytes, wait, false, nil, nil)
	if err != nil {
		return nil, 0, err
	}
	return lr.Entries, lr.Head, nil
}

// ReadLog is Read, also returning the position of the newest checkpoint
// (Cspool-Checkpoint, 0 if none). If lr.Checkpoint > after, compaction may
// have deleted entries after `after` that the caller has not seen, and it
// must rebuild from the checkpoint (Checkpoint) before applying lr.Entries.
// When the response carries both chain headers, lr.Chained is set and
// lr.StartHash and lr.HeadHash hold the hashes at after and at lr.Head; a
// response with one of them, or a malformed one, is an ErrProtocol error.
// A response with neither gives lr.Chained false: every v1 server sends
// them when after is at or below the head, so the caller (the syncer)
// treats their absence as tampering.
func (c *Client) ReadLog(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration) (spool.LogRead, error) {
	return c.readLog(ctx, after, maxCount, maxBytes, wait, true, nil, nil)
}

// ReadLogInto is ReadLog with the entries' bytes read into the spare
// capacity of buf, one after another, as long as they fit (an entry that
// does not fit gets its own allocation): a caller that reads batch after
// batch and is done with a batch's bytes before it reads the next one
// gives the same buffer again instead of allocating every entry anew.
// The entries' Data alias buf until the caller reuses it.
func (c *Client) ReadLogInto(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration, buf []byte) (spool.LogRead, error) {
	return c.readLog(ctx, after, maxCount, maxBytes, wait, true, buf[len(buf):], nil)
}

// ReadLogEach is ReadLogInto, also handing each entry to each as soon as
// it is read, with its index in the read, before the rest of the response
// arrives: the caller can work on the first entries while the spool still
// sends the others. Every entry of the LogRead returned was handed over,
// in order, with the same Data; an entry handed over belongs to a read
// that may still fail, in which case the caller must drop what it made of
// it. each is called on the caller's goroutine, one entry after the other.
func (c *Client) ReadLogEach(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration, buf []byte, each func(i int, e spool.Entry)) (spool.LogRead, error) {
	return c.readLog(ctx, after, maxCount, maxBytes, wait, true, buf[len(buf):], each)
}

// readLog reads entries; with needCheckpoint, a response without a valid
// Cspool-Checkpoint header is a protocol error. The entries' bytes go into
// arena's spare capacity while they fit (entryReader.arena); each, if not
// nil, is given every entry as it is read (ReadLogEach).
func (c *Client) readLog(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration, needCheckpoint bool, arena []byte, each func(int, spool.Entry)) (spool.LogRead, error) {
	op := fmt.Sprintf("reading entries of %s after %d", c.user, after)
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, ReadsParam: {strconv.Itoa(entry.Newest)}}
	if maxCount > 0 {
		q.Set("max_count", strconv.Itoa(maxCount))
	}
	if maxBytes > 0 {
		q.Set("max_bytes", strconv.FormatInt(maxBytes, 10))
	}
	if wait > 0 {
		q.Set("wait", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
	}
	// The answer comes within the wait plus c.stall, and its body is
	// paced (paced).
	ctx, pace := c.pace(ctx, op, "the spool", wait+c.stall)
	defer pace.done()
	stalled := pace.fail
	began := time.Now()
	resp, err := c.do(ctx, op, http.MethodGet, "/v1/users/"+c.user+"/entries", q, nil)
	if err != nil {
		endedEarly(err, wait, time.Since(began))
		return spool.LogRead{}, stalled(err)
	}
	defer resp.Body.Close()
	pace.headers()
	protoErr := func(msg string, err error) error {
		return &Error{Op: op, Status: resp.StatusCode, Kind: ErrProtocol, Msg: msg, Err: err}
	}
	if ct := resp.Header.Get("Content-Type"); !isMediaType(ct, ContentType) {
		return spool.LogRead{}, protoErr(fmt.Sprintf("unexpected Content-Type %q%s", termtext.Short(ct, 64), passedOnText), nil)
	}
	var lr spool.LogRead
	lr.Head, err = strconv.ParseUint(resp.Header.Get("Cspool-Head"), 10, 64)
	if err != nil {
		return spool.LogRead{}, protoErr("missing or bad Cspool-Head"+passedOnText, nil)
	}
	c.learnQuota(resp.Header)
	if needCheckpoint {
		lr.Checkpoint, err = strconv.ParseUint(resp.Header.Get("Cspool-Checkpoint"), 10, 64)
		if err != nil || lr.Checkpoint > lr.Head {
			return spool.LogRead{}, protoErr(fmt.Sprintf("missing or bad Cspool-Checkpoint %q (head %d)", resp.Header.Get("Cspool-Checkpoint"), lr.Head), nil)
		}
		if err := parseChainHeaders(resp.Header, &lr); err != nil {
			return spool.LogRead{}, protoErr("bad chain headers", err)
		}
	}
	// Advice, not a claim the device checks: a value that is not a
	// format is taken as none.
	if v, err := strconv.Atoi(resp.Header.Get(HeaderReaders)); err == nil && v >= entry.Version && v <= 255 {
		lr.Readers = v
	}
	// The response holds at most the entries and bytes asked for (the
	// server only lowers them), the first entry whatever its size: a
	// spool that sends more, or never ends, is refused once it passes
	// them, before it fills the device's memory.
	if maxCount <= 0 {
		maxCount = readCountCap
	}
	if maxBytes <= 0 {
		maxBytes = readBytesCap
	}
	body := pace.body(resp.Body)
	bound := c.entryBound()
	br := c.readBuf.Swap(nil)
	if br == nil {
		br = bufio.NewReaderSize(body, 64<<10)
	} else {
		br.Reset(body)
	}
	defer func() {
		br.Reset(nil)
		c.readBuf.Store(br)
	}()
	er := &entryReader{r: br, maxEntry: bound, arena: arena}
	last := after
	var size int64
	for {
		pos, data, err := er.next()
		if err == io.EOF {
			return lr, nil
		}
		var big *entryTooBigError
		if errors.As(err, &big) && len(lr.Entries) > 0 && big.size <= bound {
			return spool.LogRead{}, protoErr(fmt.Sprintf("more than the %d bytes asked for (%d entries, %d bytes, then %v)", maxBytes, len(lr.Entries), size, err), nil)
		}
		if errors.As(err, &big) {
			// One entry beyond the device's own bound: a delivery larger
			// than it takes (or a spool that lies about a length). The
			// same read fails the same way until the bound is raised.
			return spool.LogRead{}, protoErr(fmt.Sprintf("the spool at %s sent an entry at position %d of %d bytes, %s (%d bytes: its --max-message-size and what sealing adds)",
				c.base, big.pos, big.size, entryTooLargeText, bound), err)
		}
		if err != nil {
			kind := ErrProtocol
			if !errors.Is(err, errNonMinimal) && !errors.Is(err, errOverflow) && !errors.Is(err, errTrailing) && !errors.Is(err, errEntryTooBig) {
				kind = ErrTransport // truncated or the connection failed
			}
			msg := "reading response body"
			if kind == ErrTransport {
				msg = fmt.Sprintf("the answer was cut short after %d entries (a proxy or the network on the way)", len(lr.Entries))
			}
			return spool.LogRead{}, stalled(&Error{Op: op, Status: resp.StatusCode, Kind: kind, Msg: msg, Err: err})
		}
		if pos <= last || pos > lr.Head {
			return spool.LogRead{}, protoErr(fmt.Sprintf("entry position %d out of order (previous %d, head %d)", pos, last, lr.Head), nil)
		}
		if len(lr.Entries) == maxCount {
			return spool.LogRead{}, protoErr(fmt.Sprintf("more than the %d entries asked for (entry %d)", maxCount, pos), nil)
		}
		last = pos
		size += int64(len(data))
		lr.Entries = append(lr.Entries, spool.Entry{Pos: pos, Data: data})
		if each != nil {
			each(len(lr.Entries)-1, lr.Entries[len(lr.Entries)-1])
		}
		// Every further entry must fit in what is left of maxBytes.
		er.maxEntry = min(bound, uint64(max(0, maxBytes-size)))
	}
}

// Append appends batch atomically to user's log and returns the position of
// its first entry. It has the signature of spool.Store.Append, so deliveries
// can go to a local store or over HTTP alike.
func (c *Client) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	return c.appendBatch(ctx, user, batch, nil)
}

// Deliveries is c appending deliveries (cspool deliver): each append says
// so (the delivery parameter, docs/API.md §3), and the server refuses one
// that its spool key did not sign, instead of taking it for the user's own
// append when a user's secret key was given as the spool's.
func (c *Client) Deliveries() DeliveryClient { return DeliveryClient{c} }

// DeliveryClient appends deliveries; it has the signature of
// spool.Store.Append.
type DeliveryClient struct{ c *Client }

// Append is Client.Append of a delivery.
func (d DeliveryClient) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	return d.c.appendBatch(ctx, user, batch, url.Values{QueryDelivery: {"1"}})
}

// QueryDelivery marks an append as a delivery: the spool key must sign it.
const QueryDelivery = "delivery"

func (c *Client) appendBatch(ctx context.Context, user string, batch [][]byte, q url.Values) (uint64, error) {
	op := fmt.Sprintf("appending %d entries to %s", len(batch), user)
	if err := keys.CheckUserName(user); err != nil {
		return 0, &Error{Op: op, Kind: ErrBadRequest, Msg: err.Error()}
	}
	if len(batch) == 0 {
		return 0, &Error{Op: op, Kind: ErrBadRequest, Msg: "empty batch", Err: spool.ErrEmptyBatch}
	}
	resp, err := c.do(ctx, op, http.MethodPost, "/v1/users/"+user+"/entries", q, EncodeBatch(batch))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var res appendResult
	if err := decodeJSON(resp.Body, &res); err != nil || res.Count != len(batch) || res.First == 0 {
		return 0, badAppendAnswer(op, resp.StatusCode, res, err)
	}
	return res.First, nil
}

// badAppendAnswer is the error of a 200 to an append whose body does not say
// where the entries went. A body that ended before its JSON did, or failed
// to read (a proxy that cut the connection after the server's headers, or
// passed the status on without the body), is an answer lost, ErrTransport,
// as a connection cut before the headers is: the entries may be in the log.
// cspool deliver then exits 75 and the mail transfer agent tries again
// later, where it took ErrProtocol (76) for a bounce of a message that was
// delivered; a device looks for its change in the log. A body that is not
// the API's JSON at all is ErrProtocol.
func badAppendAnswer(op string, status int, res appendResult, err error) *Error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &syntax) && !errors.As(err, &typ) {
		return &Error{Op: op, Status: status, Kind: ErrTransport, Err: err,
			Msg: "the answer ended before it said where the entries went (cut short on the way): they may be in the log"}
	}
	return &Error{Op: op, Status: status, Kind: ErrProtocol, Msg: fmt.Sprintf("bad answer %+v", res), Err: err}
}

// AppendAt is Append done only if user's head is head (if_head): otherwise
// nothing is appended and the error wraps a *spool.HeadMovedError with the
// head the server found (spool.HeadAppender). A device sends its own
// commands this way, so that sending again after a lost answer cannot
// append them twice.
func (c *Client) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	op := fmt.Sprintf("appending %d entries to %s after %d", len(batch), user, head)
	if err := keys.CheckUserName(user); err != nil {
		return 0, &Error{Op: op, Kind: ErrBadRequest, Msg: err.Error()}
	}
	if len(batch) == 0 {
		return 0, &Error{Op: op, Kind: ErrBadRequest, Msg: "empty batch", Err: spool.ErrEmptyBatch}
	}
	q := url.Values{"if_head": {strconv.FormatUint(head, 10)}}
	resp, err := c.send(ctx, op, http.MethodPost, "/v1/users/"+user+"/entries", q, EncodeBatch(batch), ContentType)
	var e *Error
	if errors.As(err, &e) {
		var moved *spool.HeadMovedError
		if errors.As(e.Err, &moved) {
			moved.Want = head
		}
	}
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var res appendResult
	if err := decodeJSON(resp.Body, &res); err != nil || res.Count != len(batch) || res.First != head+1 {
		return 0, badAppendAnswer(op, resp.StatusCode, res, err)
	}
	return res.First, nil
}

// Head returns the position of the last entry of the client's user's log.
func (c *Client) Head(ctx context.Context) (uint64, error) {
	op := "reading head of " + c.user
	resp, err := c.do(ctx, op, http.MethodGet, "/v1/users/"+c.user+"/head", nil, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var res struct {
		Head *uint64 `json:"head"`
	}
	if err := decodeJSON(resp.Body, &res); err != nil || res.Head == nil {
		return 0, &Error{Op: op, Status: resp.StatusCode, Kind: ErrProtocol, Msg: "bad head answer", Err: err}
	}
	return *res.Head, nil
}

// SpoolKeySuccession implements syncer.KeySuccessor: the server's
// statement of the key its spool key replaced (docs/API.md, "Spool keys"),
// ok false when it states none. The statement is not verified here: the
// device checks it with the spool key it trusts. A server without the
// route (a release before it) answers 404 without HeaderUnknownUser: the
// error then wraps errors.ErrUnsupported.
func (c *Client) SpoolKeySuccession(ctx context.Context) (keys.Succession, bool, error) {
	chain, err := c.SpoolKeyChain(ctx)
	if err != nil || len(chain) == 0 {
		return keys.Succession{}, false, err
	}
	return chain[0], true, nil
}

// SpoolKeyChain implements syncer.KeyChainer: the server's statements of
// the keys its spool key succeeded, newest first (docs/API.md, "Spool
// keys"): the one signed by the spool key, then those of "earlier"; empty
// when it states none. Nothing is verified here, and the statements are
// not checked to follow one another: the device does that, link by link,
// from the spool key it trusts. Errors as SpoolKeySuccession's.
func (c *Client) SpoolKeyChain(ctx context.Context) ([]keys.Succession, error) {
	op := "reading the spool keys for " + c.user
	resp, err := c.do(ctx, op, http.MethodGet, "/v1/users/"+c.user+"/spool-keys", nil, nil)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound && ae.Err == nil {
			ae.Err = errors.ErrUnsupported // no such route: the user's 404 names keys.ErrUnknownUser
		}
		return nil, err
	}
	defer resp.Body.Close()
	var res spoolKeysAnswer
	if err := decodeJSON(resp.Body, &res); err != nil {
		return nil, &Error{Op: op, Status: resp.StatusCode, Kind: ErrProtocol, Msg: "bad spool keys answer", Err: err}
	}
	if res.Previous == "" {
		return nil, nil
	}
	if len(res.Earlier) >= spool.MaxKeyChain {
		return nil, &Error{Op: op, Status: resp.StatusCode, Kind: ErrProtocol, Msg: "bad spool keys answer",
			Err: fmt.Errorf("%d statements, at most %d are served", len(res.Earlier)+1, spool.MaxKeyChain)}
	}
	chain := make([]keys.Succession, 0, 1+len(res.Earlier))
	for i, st := range append([]spoolKeysStatement{{Key: res.Key, Previous: res.Previous, Signature: res.Signature}}, res.Earlier...) {
		bad := func(err error) error {
			return &Error{Op: op, Status: resp.StatusCode, Kind: ErrProtocol, Msg: "bad spool keys answer",
				Err: fmt.Errorf("statement %d: %w", i+1, err)}
		}
		var s keys.Succession
		if s.Key, err = keys.ParsePublic(st.Key); err != nil {
			return nil, bad(err)
		}
		if s.Previous, err = keys.ParsePublic(st.Previous); err != nil {
			return nil, bad(err)
		}
		if s.Signature, err = base64.RawURLEncoding.Strict().DecodeString(st.Signature); err != nil || len(s.Signature) != 64 {
			return nil, bad(fmt.Errorf("a signature of %d bytes (%v), want 64", len(s.Signature), err))
		}
		chain = append(chain, s)
	}
	return chain, nil
}

// Health checks that the server answers /v1/health.
func (c *Client) Health(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/health", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return transportError("checking health", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return responseError("checking health", resp)
	}
	// The earliest timestamp the server takes: the next request is
	// signed no earlier (a restarted server's fence, docs/API.md §2).
	c.learnEarliest(resp)
	return nil
}

// endedEarly names, in err's text, a long poll of wait that a gateway
// ended after took with 502 or 504: a reverse proxy whose read timeout is
// shorter than the long poll (nginx's proxy_read_timeout is 60 s, a
// device asks 5 minutes) answers every idle device's read so, and the
// device's status said no more than "temporarily unavailable (HTTP 504)".
func endedEarly(err error, wait, took time.Duration) {
	var e *Error
	if wait <= 0 || took < time.Second || took >= wait || !errors.As(err, &e) ||
		(e.Status != http.StatusBadGateway && e.Status != http.StatusGatewayTimeout) {
		return
	}
	what := fmt.Sprintf("the long poll of %v was ended after %v: a reverse proxy on the way whose read timeout is shorter than the long poll answers so; raise it above the spool server's --max-wait (docs/TLS.md)",
		wait.Round(time.Second), took.Round(time.Second))
	if e.Msg != "" {
		what = e.Msg + "; " + what
	}
	e.Msg = what
}

// isMediaType reports whether the Content-Type ct is the media type want:
// names compared without regard to case, parameters (a charset a proxy
// added) ignored (RFC 9110 section 8.3.1).
func isMediaType(ct, want string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == want
}

// passedOnText ends the message of an answer whose API headers are missing
// or changed: a reverse proxy on the way may have dropped or rewritten
// them. Hint keys on it.
const passedOnText = " (the API's answers must reach this device with their headers as sent: a proxy on the way may drop or change them)"

func decodeJSON(r io.Reader, v any) error {
	return json.NewDecoder(io.LimitReader(r, 1<<16)).Decode(v)
}

// do sends a signed request with an entries body (if any); any answer but
// 200 becomes an *Error.
func (c *Client) do(ctx context.Context, op, method, path string, q url.Values, body []byte) (*http.Response, error) {
	return c.send(ctx, op, method, path, q, body, ContentType)
}

// send is do with the body's Content-Type. A request refused for its
// timestamp (the client's clock is off, or the server restarted after it was
// signed) is signed again with the server's time and sent once more; the
// server refused it before reading its body, so nothing happened twice.
func (c *Client) send(ctx context.Context, op, method, path string, q url.Values, body []byte, contentType string) (*http.Response, error) {
	var rb *requestBody
	if body != nil {
		rb = &requestBody{hash: sha256.Sum256(body), size: int64(len(body)), open: func() io.Reader { return bytes.NewReader(body) }}
	}
	return c.sendBody(ctx, op, method, path, q, rb, contentType)
}

// requestBody is a request's body without holding it: its SHA-256, its
// length, and how to read it from the start (again for a retry or a
// redirect).
type requestBody struct {
	hash [sha256.Size]byte
	size int64
	open func() io.Reader
}

// sendBody is send with the body as a requestBody (nil: none).
func (c *Client) sendBody(ctx context.Context, op, method, path string, q url.Values, body *requestBody, contentType string) (*http.Response, error) {
	if c.user == "" && method == http.MethodGet {
		return nil, &Error{Op: op, Kind: ErrBadRequest, Msg: "client has no user name"}
	}
	hash := sha256.Sum256(nil)
	if body != nil {
		hash = body.hash
	}
	for retried := false; ; retried = true {
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
		if err != nil {
			return nil, &Error{Op: op, Kind: ErrBadRequest, Msg: err.Error(), Err: err}
		}
		req.URL.RawQuery = q.Encode()
		if body != nil {
			req.Header.Set("Content-Type", contentType)
			req.ContentLength = body.size
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body.open()), nil }
			req.Body, _ = req.GetBody()
			if body.size == 0 {
				req.Body, req.GetBody = http.NoBody, nil
			}
		} else {
			req.Body, req.ContentLength, req.GetBody = http.NoBody, 0, nil
		}
		nonce, err := signRequestHash(req, hash, c.key, c.signingTime())
		if err != nil {
			return nil, &Error{Op: op, Kind: ErrBadRequest, Msg: err.Error(), Err: err}
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return nil, transportError(op, err)
		}
		if answersAnother(resp.Header, nonce) {
			// The answer names another request: a cache or proxy on
			// the path mixed answers up (another user's, an old one).
			// Nothing of it is taken; the request may be sent again.
			resp.Body.Close()
			return nil, &Error{Op: op, Status: resp.StatusCode, Kind: ErrTransport,
				Msg: "the answer is to another request (its " + HeaderNonce + " is not this request's nonce): a proxy or cache on the way mixed answers up"}
		}
		c.learnBudget(resp)
		if resp.StatusCode == http.StatusOK {
			return resp, nil
		}
		if !retried && (c.learnTime(resp) || method == http.MethodGet && refusedAsReplayed(resp)) {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			continue
		}
		e := responseError(op, resp)
		resp.Body.Close()
		if resp.StatusCode == http.StatusConflict {
			if h, err := strconv.ParseUint(resp.Header.Get("Cspool-Head"), 10, 64); err == nil {
				e.Err = &spool.HeadMovedError{Head: h} // a conditional append
			}
		}
		if resp.StatusCode == http.StatusNotFound && resp.Header.Get("Cspool-Checkpoint-Pos") == "0" {
			e.Err = spool.ErrNoCheckpoint // the route exists, the checkpoint does not
		}
		if resp.StatusCode == http.StatusNotFound && resp.Header.Get(HeaderUnknownUser) != "" {
			e.Err = keys.ErrUnknownUser // the route exists, the user does not
		}
		if refusedAsReplayed(resp) {
			e.Err = ErrReplayed // a copy of this request came first
		}
		return nil, e
	}
}

// answersAnother reports whether an answer's headers h name another
// request than the one signed with nonce: a HeaderNonce that is not nonce.
// A proxy may pass a header on twice, or merge its copies into one list
// (RFC 9110 section 5.3): copies that all name nonce name this request. A
// device took such an answer for one to another request, and read again
// twice a second for as long as the proxy did so.
func answersAnother(h http.Header, nonce string) bool {
	for _, v := range h.Values(HeaderNonce) {
		for item := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(item) != nonce {
				return true
			}
		}
	}
	return false
}

// refusedAsReplayed reports whether resp refuses the request's nonce as seen
// before (HeaderReplayed). For a read, only a copy of this very request
// can have used it first: net/http sends a GET again, with the same
// headers, when the connection it was sent on breaks before the answer,
// and a proxy may do the same. A device took that refusal for a key the
// server does not know and stopped syncing for ten minutes; the read is
// now signed again, with a new nonce, once. Appends are never sent again
// by net/http, and one refused so is left to the caller (§4).
func refusedAsReplayed(resp *http.Response) bool {
	return resp.StatusCode == http.StatusUnauthorized && resp.Header.Get(HeaderReplayed) != ""
}

// signingTime is the timestamp for the next request: our clock corrected
// by what the server last said of its own, and no earlier than the earliest
// timestamp it then accepted.
func (c *Client) signingTime() time.Time {
	t := c.now().Add(time.Duration(c.offset.Load()))
	if e := time.Unix(c.earliest.Load(), 0); t.Before(e) {
		return e
	}
	return t
}

// learnTime reads a refusal of the request's timestamp (401 or 503 with
// HeaderEarliestTS): it takes the server's clock from the Date header and
// the earliest timestamp it accepts, and reports whether to sign again.
func (c *Client) learnTime(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	return c.learnEarliest(resp)
}

// learnEarliest takes the server's clock from resp's Date header and the
// earliest timestamp it accepts from its HeaderEarliestTS, and reports
// whether it had one.
func (c *Client) learnEarliest(resp *http.Response) bool {
	e, err := strconv.ParseInt(resp.Header.Get(HeaderEarliestTS), 10, 64)
	if err != nil || e <= 0 {
		return false
	}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		// Date has whole seconds, so this errs towards the past, which the
		// server allows more of.
		c.offset.Store(int64(d.Sub(c.now())))
	}
	c.earliest.Store(e)
	return true
}

// maxServerText bounds the server's text in an error, in bytes. The spool
// is not trusted (docs/SECURITY.md §2), and its text reaches the user's
// terminal (cspool sync, deliver, status) and the daemon's status: it is
// shown through termtext.Short.
const maxServerText = 512

// notFromAPI reports whether an error status answered in other than JSON
// is another program's for sure: a 4xx but for a timeout (408), a size
// (413) and a rate (429), which a proxy in front of the API may answer for
// it and which keep their meaning, and 501. A 5xx page is left to
// statusKind (a proxy whose spool server is down: temporary).
func notFromAPI(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return false
	case http.StatusNotImplemented:
		return true
	}
	return status >= 400 && status < 500
}

// responseError turns an error response into an *Error with the server's
// text, made fit to be shown (termtext.Short).
func responseError(op string, resp *http.Response) *Error {
	var body struct {
		Error string `json:"error"`
	}
	msg := ""
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/json") && decodeJSON(resp.Body, &body) == nil:
		msg = termtext.Short(body.Error, maxServerText)
	case resp.StatusCode == http.StatusBadRequest:
		// A Go HTTPS server's answer to plain HTTP is not from the API.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if strings.Contains(string(b), plainHTTPToTLS) {
			return &Error{Op: op, Status: resp.StatusCode, Kind: ErrProtocol, Msg: "the server speaks HTTPS, and this request was plain HTTP"}
		}
	case notFromAPI(resp.StatusCode):
		// The API answers every error in JSON (an unknown route too):
		// another program's web server is on that port, or a proxy
		// that does not pass the request on.
		return &Error{Op: op, Status: resp.StatusCode, Kind: ErrProtocol,
			Msg: fmt.Sprintf("the answer (HTTP %d, %s) is not the spool API's: another program answers on that port", resp.StatusCode, termtext.Short(ct, 64))}
	}
	e := &Error{Op: op, Status: resp.StatusCode, Kind: statusKind(resp.StatusCode), Msg: msg}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		// Delay-seconds only (RFC 9110 §10.2.3): the API sends no date.
		if secs, err := strconv.ParseUint(resp.Header.Get("Retry-After"), 10, 32); err == nil {
			e.RetryAfter = min(time.Duration(secs)*time.Second, maxRetryAfter)
		}
	}
	return e
}
