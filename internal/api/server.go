package api

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
)

// Users decides which key may act as which user (userdb.DB and userdb.PG
// implement it).
type Users interface {
	// Check decides, before the request's signature is verified and without
	// side effects: nil, or an error wrapping userdb.ErrUnknownKey (401),
	// keys.ErrForbidden (403), or userdb.ErrUnclaimed: the name is free
	// and a test mode database would register it to the key.
	Check(ctx context.Context, user string, key keys.PublicKey) error
	// Authorize is called, after the signature, only when Check said
	// ErrUnclaimed: it registers the name to the key (test mode), or
	// returns an error as Check does.
	Authorize(ctx context.Context, user string, key keys.PublicKey) error
	// Lookup returns user's registered key, against which the entries the
	// spool key appends are checked: an error wrapping
	// keys.ErrUnknownUser refuses them (404), unless it also wraps
	// userdb.ErrUnclaimed (test mode: nobody registered the name yet, so
	// there is no key to check against).
	Lookup(ctx context.Context, user string) (keys.PublicKey, error)
}

// Config configures a Server. Zero fields take the documented defaults.
type Config struct {
	// Store is required. If it also implements spool.Compactor, the
	// checkpoint routes work (else they answer 501); if it implements
	// spool.CheckpointPositioner too, reads learn the checkpoint's position
	// without loading the checkpoint. If it implements spool.OnceAppender
	// (both stores do), every append without if_head is recorded with its
	// key and nonce, so that the same request reaching any server on the
	// store appends once (docs/API.md §4, "Appends made once").
	Store spool.Store
	Users Users // required
	// SpoolKey, if set, may append entries to any user's log (deliveries
	// over HTTP) and do nothing else.
	SpoolKey keys.PublicKey
	// SpoolKeySuccession, if set, is the statement, signed by the spool
	// key, of the key it replaced (the store's spool.KeyHistory), served
	// to the users' devices (docs/API.md, "Spool keys"); nil: the spool
	// key replaced none.
	SpoolKeySuccession *keys.Succession
	// SpoolKeyEarlier are the statements before SpoolKeySuccession,
	// newest first, served with it: SpoolKeyEarlier[0] signed by the key
	// SpoolKeySuccession names as replaced and naming the key that one
	// replaced, and so on (the store's spool.KeyChain), at most
	// spool.MaxKeyChain-1 of them.
	SpoolKeyEarlier []keys.Succession
	// Quota, if above zero, is the most bytes a user's log may hold for a
	// delivery to be appended to it: a spool key append that would take
	// the log past it gets 507 (docs/API.md §4). It needs a Store that
	// implements spool.Quotas. A user's own appends count towards it and
	// are refused only past OwnMargin.
	Quota int64
	// OwnMargin, if above zero (and Quota too), is how far past Quota a
	// user's own appends may take the user's log: one that would take it
	// further gets 507, nothing appended (docs/API.md §4). Zero: a user's
	// own appends are never refused for the quota.
	OwnMargin int64
	// NewFormatsAfter is how long every read of a user's log must have said
	// it reads an entry format (the store's spool.ReaderFormats) before
	// ReadersFormat says that format for that user: format 3 for
	// SealsVersion3 (--entry-format auto), format 4 for the user's devices
	// to write commands of version 2 (HeaderReaders).
	NewFormatsAfter time.Duration
	// Logger receives one line per request and the detail of errors. Nil
	// discards.
	Logger *slog.Logger
	// MaxBody is the largest append body accepted (413 beyond). Zero means
	// 64 MiB, enough for a 50 MB message sealed and framed.
	MaxBody int64
	// MaxBatchCount is the most entries in one append. Zero means 10000.
	MaxBatchCount int
	// AppendMemory bounds the bytes of append bodies the server holds at
	// once, all callers together: an append takes its Content-Length
	// (MaxBody when the length is not given) from it before its body is
	// read, and gives it back once the store has answered; one that finds
	// no room waits up to CheckpointWait, then gets 503 with Retry-After.
	// Zero means 4 * MaxBody; it is raised to MaxBody if below, so that
	// the largest append accepted fits alone.
	AppendMemory int64
	// ReadMemory bounds the bytes of entries the reads hold in the
	// server's memory at once, all keys together, from the store's read
	// of them until their answer is written (a read's first entry is sent
	// whole, however large, and a client that takes nothing of the answer
	// keeps it for WriteStall for each 256 KiB). One user's key holds at
	// most a quarter of it, at least MaxBody. A read that finds no room
	// waits up to CheckpointWait for it, then gets 429 (its key's share)
	// or 503 (the server's), with Retry-After; a read alone is served
	// whatever its size. Zero means 4 * MaxBody; it is raised to MaxBody
	// if below.
	ReadMemory int64
	// MemoryHeld, if set, is told every change of the bytes held against
	// AppendMemory, CheckpointMemory and ReadMemory together (positive as
	// a body's or a read's share is taken, negative as it is given back);
	// a checkpoint's bytes count checkpointCopies times.
	MemoryHeld func(delta int64)
	// MaxCheckpointBody is the largest checkpoint upload accepted (413
	// beyond). Zero means DefaultMaxCheckpointBody (256 MiB: a mailbox of
	// about 2.6 million messages at about 102 bytes each). Above
	// MaxCheckpointBodyLimit it is lowered to it: the stores could not
	// keep more, nor a device download it.
	MaxCheckpointBody int64
	// CheckpointMemory bounds the bytes of checkpoint uploads the server
	// holds at once, all users together: an upload takes its
	// Content-Length from it before its body is read, and gives it back
	// once stored. Zero means DefaultCheckpointMemory (512 MiB); it is
	// raised to MaxCheckpointBody if below, so that the largest upload
	// accepted fits alone. The store adds transient copies while it writes
	// the checkpoint (docs/OPERATING.md, "Running it").
	CheckpointMemory int64
	// CheckpointWait is how long an upload waits for room in
	// CheckpointMemory before it gets 503 with Retry-After. Zero means 10
	// s; negative: no wait.
	CheckpointWait time.Duration
	// MaxCheckpointKeep is the most kept positions one checkpoint upload
	// may list (413 beyond). Zero derives it from MaxCheckpointBody: one
	// for every CheckpointBytesPerKept bytes (5,162,220 at the default
	// 256 MiB), so that no checkpoint within the size limit is refused
	// for its keep list. An upload takes 8 bytes a position it lists from
	// CheckpointMemory besides its body, for the decoded list.
	MaxCheckpointKeep int
	// DefaultReadCount and MaxReadCount: max_count when absent, and its cap.
	// Zero means 1000 and 10000.
	DefaultReadCount, MaxReadCount int
	// DefaultReadBytes and MaxReadBytes: max_bytes when absent, and its cap.
	// Zero means 8 MiB and 64 MiB. A read always returns at least one entry
	// if one exists, even one larger than max_bytes.
	DefaultReadBytes, MaxReadBytes int64
	// ChunkBytes bounds each store read while streaming a response. Zero
	// means 4 MiB.
	ChunkBytes int64
	// MaxWait caps a long-poll's wait parameter. Zero means 5 minutes. Behind
	// a reverse proxy keep it below the proxy's read timeout.
	MaxWait time.Duration
	// ClockSkew is how far behind the server's clock a request's timestamp
	// may be, and so how long its nonce is remembered (plus a second).
	// Zero means 1 minute: a client whose clock is further off is told
	// the server's time and signs again (docs/API.md §2), and the shorter
	// the window, the more requests a nonce budget allows a second.
	ClockSkew time.Duration
	// FutureSkew is how far ahead of the server's clock a request's
	// timestamp may be. Zero means 30 s. It also sets the restart rule: a
	// request signed at or before Started plus FutureSkew is refused (503),
	// because an earlier server process on the same store may have accepted
	// it and its nonce is not remembered here.
	FutureSkew time.Duration
	// Started is when this server became the only one that could have
	// accepted requests on its store, for the restart rule. Zero means the
	// time NewServer is called. Set an earlier time only if no other server
	// accepted requests for the store after it (the store was created then).
	Started time.Time
	// sinceStart is the time since Started by the monotonic clock (a
	// test's own otherwise): the server's clock (now) starts at Started
	// carried on by it.
	sinceStart func() time.Duration
	// MaxNonces is the nonce budget of each user key: how many of its
	// requests the server remembers at once (each for ClockSkew after its
	// timestamp). Beyond it the key's requests get 429 until its oldest
	// nonces expire; no other key is affected. Zero means 16384 (about 268
	// requests a second, sustained over the 61 s each is held, for all of a
	// user's devices together).
	MaxNonces int
	// SpoolKeyNonces is the nonce budget of the spool key (deliveries over
	// HTTP). Zero means 262144, about 4,300 deliveries a second sustained.
	SpoolKeyNonces int
	// MaxLongPolls bounds the reads of one user waiting for new entries at
	// once; a read that would wait beyond it gets 429. Zero means 16.
	MaxLongPolls int
	// MaxReadsPerKey bounds the reads of one user's key that hold entries
	// at once, from the store's read of them until their answer is
	// written (long-polls waiting hold none): a read beyond waits up to
	// CheckpointWait for one to end, then gets 429. Zero means 8.
	MaxReadsPerKey int
	// MaxConnsPerAddr bounds the connections one client address (an IPv4
	// address, or an IPv6 /64) holds open at once, on a listener wrapped by
	// Server.Listener. Zero means 64; negative means no limit.
	MaxConnsPerAddr int
	// RefusalRate is how many requests a second one client address may have
	// refused, before their signature was checked or over their caller's
	// share, and answered at once (with a burst of twice as many); beyond,
	// each answer is held until the rate allows it, up to 2 s. It needs the
	// listener of Server.Listener. Zero means 20; negative turns it off.
	RefusalRate int
	// WriteStall is the longest one write of an answer waits for its
	// client to take bytes, on a listener wrapped by Server.Listener: a
	// client that stops reading is cut off after it, and what its answer
	// held (a checkpoint, a read's entries) is let go. Zero means 1
	// minute; the client gives up after 2 minutes without a byte. It
	// also bounds a checkpoint upload's body, once the upload holds its
	// share of CheckpointMemory: each 256 KiB of it must come within
	// WriteStall, or the upload is ended and its share let go.
	WriteStall time.Duration
	// RetryAfter is the Retry-After sent with 503 and 429 when the server
	// has no better figure. Zero means 5 s.
	RetryAfter time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Metrics receives counts and durations for monitoring. Nil turns them
	// off.
	Metrics Metrics
}

// fill gives the fields left zero their documented defaults.
func (c *Config) fill() {
	if c.MaxBody <= 0 {
		c.MaxBody = 64 << 20
	}
	if c.MaxBatchCount <= 0 {
		c.MaxBatchCount = 10000
	}
	if c.AppendMemory <= 0 {
		c.AppendMemory = 4 * c.MaxBody
	}
	c.AppendMemory = max(c.AppendMemory, c.MaxBody)
	if c.ReadMemory <= 0 {
		c.ReadMemory = 4 * c.MaxBody
	}
	c.ReadMemory = max(c.ReadMemory, c.MaxBody)
	if c.MaxCheckpointBody <= 0 {
		c.MaxCheckpointBody = DefaultMaxCheckpointBody
	}
	c.MaxCheckpointBody = min(c.MaxCheckpointBody, MaxCheckpointBodyLimit)
	if c.CheckpointMemory <= 0 {
		c.CheckpointMemory = DefaultCheckpointMemory
	}
	if c.MaxCheckpointKeep <= 0 {
		c.MaxCheckpointKeep = int(c.MaxCheckpointBody / CheckpointBytesPerKept)
	}
	// A kept position takes at least a byte of the body.
	c.MaxCheckpointKeep = int(min(int64(c.MaxCheckpointKeep), c.MaxCheckpointBody))
	c.CheckpointMemory = max(c.CheckpointMemory, checkpointHold(c.MaxCheckpointBody, c.MaxCheckpointKeep))
	if c.CheckpointWait == 0 {
		c.CheckpointWait = 10 * time.Second
	}
	if c.DefaultReadCount <= 0 {
		c.DefaultReadCount = 1000
	}
	if c.MaxReadCount <= 0 {
		c.MaxReadCount = 10000
	}
	if c.DefaultReadBytes <= 0 {
		c.DefaultReadBytes = 8 << 20
	}
	if c.MaxReadBytes <= 0 {
		c.MaxReadBytes = 64 << 20
	}
	if c.ChunkBytes <= 0 {
		c.ChunkBytes = 4 << 20
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 5 * time.Minute
	}
	if c.ClockSkew <= 0 {
		c.ClockSkew = time.Minute
	}
	if c.FutureSkew <= 0 {
		c.FutureSkew = 30 * time.Second
	}
	if c.MaxNonces <= 0 {
		c.MaxNonces = 1 << 14
	}
	if c.SpoolKeyNonces <= 0 {
		c.SpoolKeyNonces = 1 << 18
	}
	if c.MaxLongPolls <= 0 {
		c.MaxLongPolls = 16
	}
	if c.MaxReadsPerKey <= 0 {
		c.MaxReadsPerKey = 8
	}
	if c.MaxConnsPerAddr == 0 {
		c.MaxConnsPerAddr = 64
	}
	if c.RefusalRate == 0 {
		c.RefusalRate = 20
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = 5 * time.Second
	}
	if c.WriteStall <= 0 {
		c.WriteStall = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Started.IsZero() {
		c.Started = c.Now()
	}
	if c.sinceStart == nil {
		started := c.Started
		c.sinceStart = func() time.Duration { return time.Since(started) }
	}
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
}

// Checkpoint upload limits (Config.MaxCheckpointBody, CheckpointMemory).
const (
	// DefaultMaxCheckpointBody fits a mailbox of about 2.6 million
	// messages (a checkpoint takes about 102 bytes a message).
	DefaultMaxCheckpointBody = 256 << 20
	// MaxCheckpointBodyLimit is the largest MaxCheckpointBody that works
	// end to end: SQLite's largest value (SQLITE_MAX_LENGTH) and under
	// PostgreSQL's 1 GB field and the 1 GiB a device downloads
	// (maxCheckpoint).
	MaxCheckpointBodyLimit = 1_000_000_000
	// DefaultCheckpointMemory holds two of the largest default uploads.
	DefaultCheckpointMemory = 2 * DefaultMaxCheckpointBody
	// CheckpointBytesPerKept is the fewest bytes of an upload a kept
	// position comes with, from which MaxCheckpointKeep is derived: each
	// kept position is the body of at least one live message, and each
	// message in the state (mailstore.SnapMessage) carries its 16-byte id
	// and 32-byte digest as CBOR byte strings (17 and 34 bytes), besides
	// its position's at least one byte in the keep list: 52.
	CheckpointBytesPerKept = 52
)

// checkpointHold is what an upload of body bytes listing keep positions
// takes from CheckpointMemory: its body, and 8 bytes a position for the
// decoded keep list.
func checkpointHold(body int64, keep int) int64 {
	return body + 8*int64(keep)
}

// Server serves the API v1. Create it with NewServer.
type Server struct {
	cfg      Config
	ownFloor ownFloors // own appends of logs past the quota and the margin (handlers.go)
	log      *slog.Logger
	mux      *http.ServeMux
	nonces   *nonceCache
	known    knownKeys // parsed keys of authenticated requests (auth.go)
	polls    *pollCounter
	conns    *connLimiter
	cpMem    *byteBudget // the checkpoints held at once, uploads and downloads
	// cpKeys holds the users' keys uploading or downloading a checkpoint
	// now, one of each at a time (checkpoint.go).
	cpKeysMu sync.Mutex
	cpKeys   map[cpTransfer]bool
	apMem    *byteBudget // the append bodies held at once

	apKeysMu sync.Mutex
	apKeys   map[[8]byte]int64 // append bytes each user's key holds (handlers.go)
	// rdKeys counts the reads of each key that hold entries now
	// (holdRead); rdFreed is closed (and replaced) when one ends.
	rdKeysMu sync.Mutex
	rdKeys   map[[8]byte]int
	rdFreed  chan struct{}
	rdMem    *readBudget // the bytes of entries reads hold (rdmem.go)
	// onceMu guards inflight: the appends recorded once (spool.Once.ID)
	// this process has accepted and not yet answered; the channel is
	// closed when the handler returns (serverauth.go authed).
	onceMu   sync.Mutex
	inflight map[[32]byte]chan struct{}
	// refusals thins out the log lines of requests refused before their
	// signature was checked, so that a flood cannot fill the log;
	// anonymous those of the answers to requests that need no signature
	// (/v1/health), which anyone can send as fast.
	refusals, anonymous *logSampler
	// failedTLS thins out the log lines of failed TLS handshakes
	// (ListenerTLS).
	failedTLS *logSampler
	// fence is the restart rule: timestamps at or before it are refused.
	fence int64
	// The server's clock (now): where it was last, and the monotonic
	// reading then; whether a step back was logged.
	clockMu     sync.Mutex
	clockLast   time.Time
	clockMono   time.Time
	steppedBack bool

	// buffers are the write buffers of read responses, reused: most
	// responses are the empty answers to long-polls that ended, thousands
	// a minute with many devices, and a fresh 64 KiB each would be
	// garbage. spareBuffer holds the last one given back, out of the
	// pool, as spareChunks does the chunks' buffers.
	buffers     sync.Pool
	spareBuffer atomic.Pointer[bufio.Writer]
	// chunks are the buffers a response's chunks are read into, two
	// together (*chunkBufs): its first (spool.SizedReader), then its
	// further ones when the store reads into a given buffer
	// (spool.IntoReader), alternating between the two, so that a first
	// sync's 140 MB are not as many bytes of garbage again on top of the
	// driver's. spareChunks holds the last ones given back, out of
	// the pool (chunkBufs): at most 2*ChunkBytes kept while no read is
	// answered.
	chunks      sync.Pool
	spareChunks atomic.Pointer[chunkBufs]
	// answers are the write buffers of parked reads' answers (park.go).
	answers sync.Pool
	// nextReaders are the read buffers of requests served after a parked
	// read's answer on its connection (park.go serveNext).
	nextReaders sync.Pool
	// parking is set once Listener made a listener that takes parked
	// reads' connections back; parkedReads counts the reads parked.
	parking     atomic.Bool
	parkedReads sync.WaitGroup
	parkedNow   atomic.Int64

	// formats remembers, for users whose log holds an entry of format 3
	// or 4, where the first of each is (checkReads; 0 for none found). Entries are only appended after
	// it, so it stays the first until a compaction deletes it: a user's is
	// forgotten at each checkpoint this server stores for the user, and
	// kept ten minutes at most, which bounds how long a compaction by
	// another server (the same PostgreSQL store) leaves it stale. Stale,
	// it refuses an old device's checkpoint that might have been stored:
	// the safe way.
	formats *userMemo[formatFirsts]
	// oldReaders holds, for the users whose device built before the newest
	// entry format read the log within the hour (logged), the lowest
	// format such a read said it reads; oldNoted the same for what was
	// written to the store within the minute; newReaders those whose read
	// saying it reads the newest was written within the hour (noteReader);
	// seals, the store's ReadersFormat for a user.
	oldReaders, oldNoted *userMemo[int]
	newReaders           *userMemo[struct{}]
	seals                *userMemo[int]

	// stopping is cancelled by Shutdown to end long-polls.
	stopping context.Context
	stop     context.CancelFunc
}

// checkpointCopies is what a checkpoint upload's bytes held against
// CheckpointMemory stand for in memory, as told to Config.MemoryHeld: the
// upload, and the store's two copies while it writes it (docs/OPERATING.md,
// "Running it").
const checkpointCopies = 3

// times returns f telling k times each change, or nil for a nil f.
func times(k int64, f func(int64)) func(int64) {
	if f == nil {
		return nil
	}
	return func(d int64) { f(k * d) }
}

// NewServer returns the API handler.
func NewServer(cfg Config) *Server {
	cfg.fill()
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), nonces: newNonceCache(),
		polls: &pollCounter{waiting: map[string]int{}, parked: map[string][]*parked{}}, conns: newConnLimiter(cfg.MaxConnsPerAddr, float64(cfg.RefusalRate), cfg.WriteStall),
		refusals: &logSampler{perSecond: refusalLogsPerSecond}, anonymous: &logSampler{perSecond: refusalLogsPerSecond},
		failedTLS: &logSampler{perSecond: refusalLogsPerSecond},
		formats:   newUserMemo[formatFirsts](memoUsers, 10*time.Minute), oldReaders: newUserMemo[int](memoUsers, noteReadersEvery),
		oldNoted:   newUserMemo[int](memoUsers, noteOldReadersEvery),
		newReaders: newUserMemo[struct{}](memoUsers, noteReadersEvery), seals: newUserMemo[int](memoUsers, sealsRecheck),
		cpMem: newByteBudget(cfg.CheckpointMemory, cfg.Metrics.CheckpointWaiting, times(checkpointCopies, cfg.MemoryHeld)),
		apMem: newByteBudget(cfg.AppendMemory, func(int) {}, cfg.MemoryHeld), apKeys: map[[8]byte]int64{}, cpKeys: map[cpTransfer]bool{},
		rdKeys: map[[8]byte]int{}, rdFreed: make(chan struct{}), rdMem: newReadBudget(cfg.ReadMemory, max(cfg.ReadMemory/4, cfg.MaxBody), cfg.MemoryHeld),
		inflight: map[[32]byte]chan struct{}{}}
	s.fence = cfg.Started.Add(cfg.FutureSkew).Unix()
	// The clock starts where the start was, carried on by the monotonic
	// clock since.
	s.clockMono = time.Now()
	s.clockLast = cfg.Started.Add(cfg.sinceStart())
	s.stopping, s.stop = context.WithCancel(context.Background())
	s.mux.HandleFunc("GET /v1/health", s.health)
	s.mux.Handle("GET /v1/users/{user}/entries", s.authed(s.read, routeRead))
	s.mux.Handle("POST /v1/users/{user}/entries", s.authed(s.appendEntries, routeAppend))
	s.mux.Handle("GET /v1/users/{user}/head", s.authed(s.head, routeRead))
	s.mux.Handle("PUT /v1/users/{user}/checkpoint", s.authed(s.putCheckpoint, routeUserWrite))
	s.mux.Handle("GET /v1/users/{user}/checkpoint", s.authed(s.getCheckpoint, routeRead))
	s.mux.Handle("GET /v1/users/{user}/spool-keys", s.authed(s.spoolKeys, routeRead))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Anyone can ask for any path, as often as they like: a refusal
		// before any signature, its log lines thinned out.
		s.fail(w, r, unverified(errorf(ErrNotFound, "no route %s %s", clip(r.Method), clip(r.URL.Path))))
	})
	return s
}

// Shutdown ends every long-poll in progress (they answer at once with what
// they have) and makes health report 503. Call it before
// http.Server.Shutdown so that waiting readers do not hold shutdown up.
func (s *Server) Shutdown() { s.stop() }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var id [8]byte
	rand.Read(id[:])
	ri := &reqInfo{id: hex.EncodeToString(id[:])}
	rw := &recorder{ResponseWriter: w, status: http.StatusOK}
	rw.Header().Set("Cspool-Request-Id", ri.id)
	if len(r.TransferEncoding) > 0 || !r.ProtoAtLeast(1, 1) && r.ContentLength != 0 {
		// A chunked body ends its connection (RFC 9112 section 6.1, for
		// one that also gave a Content-Length, which net/http drops
		// without a word): a proxy in front that went by the length
		// passed the bytes after the last chunk as part of this request,
		// and they are no request of their own. So does any body of
		// HTTP/1.0: net/http reads it by its length and drops a
		// Transfer-Encoding there without a word (section 6.1 again:
		// faulty framing, to be closed after), and a proxy that read the
		// chunks passed a request inside them as this one's body.
		rw.Header().Set("Connection", "close")
	}
	rr := r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri))
	if r.ContentLength != 0 {
		rr.Body = &watchedBody{ReadCloser: r.Body, ri: ri}
	}
	if s.conns.isExcess(r.RemoteAddr) {
		// One answer on a connection over its address's limit, then close.
		rw.Header().Set("Connection", "close")
		s.fail(rw, rr, &srvError{kind: ErrTooManyRequests, sampled: true,
			msg: fmt.Sprintf("too many connections from this address (limit %d)", s.cfg.MaxConnsPerAddr)})
	} else if strings.Contains(r.URL.EscapedPath(), "%") {
		// A name is never percent-encoded, nor is any other part of a
		// path of the API: one that is would be read as another name by a
		// cache, a proxy or a log than by the signature and the handler,
		// which see the decoded path.
		s.fail(rw, rr, unverified(errorf(ErrBadRequest, "percent-encoded path %q: the API's paths are never percent-encoded", clip(r.URL.EscapedPath()))))
	} else if !cleanPath(r.URL.Path) {
		// The mux would answer these itself: a redirect to the clean
		// path, or a 400 or 404 of its own, none of them slowed or
		// thinned out in the log as a refusal, and a redirect the API
		// never gives (docs/API.md §7).
		s.fail(rw, rr, unverified(errorf(ErrBadRequest, "path %q is not clean (an empty, . or .. segment, or no leading /): the API's paths are always clean", clip(r.URL.Path))))
	} else {
		s.mux.ServeHTTP(rw, rr)
	}
	if ri.parked {
		return // answered, observed and logged when its wait ends (park.go)
	}
	s.answered(rr, rw, start, ri)
}

// cleanPath reports whether p is a path the mux routes as it is: absolute,
// with no empty, "." or ".." segment but for a trailing slash. Any other
// (`//v1/health`, `/v1/users/alice/../bob/entries`, the `*` of `GET *`, the
// empty path of a CONNECT to a host) the mux answers itself, with a
// redirect to the clean path or a plain 400 or 404.
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	return c == p || c != "/" && c+"/" == p
}

// answered reports a request's answer to the metrics and the log. r is the
// request as the mux saw it.
func (s *Server) answered(r *http.Request, rw *recorder, start time.Time, ri *reqInfo) {
	s.observe(r, rw.status, ri)
	var suppressed, unasked int
	if se, ok := ri.err.(*srvError); ok && (se.sampled || se.thinned) {
		var log bool
		if log, suppressed = s.refusals.allow(start); !log {
			return
		}
	} else if ri.anonymous && ri.err == nil {
		var log bool
		if log, unasked = s.anonymous.allow(start); !log {
			return
		}
	}
	level := slog.LevelInfo
	gone := r.Context().Err() != nil
	if !gone && rw.status >= 500 {
		level = slog.LevelWarn
	}
	ctx := context.WithoutCancel(r.Context())
	if !s.log.Enabled(ctx, level) {
		return
	}
	// Typed attributes, in a fixed array: this line is written for every
	// renewal of every device's long-poll.
	var buf [12]slog.Attr
	attrs := append(buf[:0], slog.String("id", ri.id), slog.String("method", clip(r.Method)), slog.String("path", clip(r.URL.Path)),
		slog.Int("status", rw.status), slog.Int64("bytes", rw.bytes), slog.Int64("ms", time.Since(start).Milliseconds()),
		slog.String("remote", r.RemoteAddr))
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("similar_refusals_not_logged", suppressed))
	}
	if unasked > 0 {
		attrs = append(attrs, slog.Int("similar_requests_not_logged", unasked))
	}
	if ri.key.Ed25519 != nil {
		attrs = append(attrs, slog.String("key_id", hex.EncodeToString(ri.keyID[:])))
	}
	if ri.err != nil {
		attrs = append(attrs, slog.String("err", ri.err.Error()))
	}
	if ri.repeat {
		attrs = append(attrs, slog.Bool("appended_before", true))
	}
	if gone {
		// The client went away (a daemon stopping mid long-poll): not a
		// server failure, and nobody reads the status.
		attrs = append(attrs, slog.Bool("client_gone", true))
	}
	s.log.LogAttrs(ctx, level, "http request", attrs...)
}

// reqInfo collects what the request log line reports.
type reqInfo struct {
	id    string
	key   keys.PublicKey // the signer named by the Authorization header
	keyID [8]byte        // key.KeyID(), once key is set
	spool bool           // signed with the spool key
	// budget is the signer's nonce budget, once its signature verified
	// and it was authorized, and held how many of it its nonces took
	// then (HeaderBudget).
	budget, held int
	// nonce is the request's nonce in hex, once its signature verified
	// (HeaderNonce).
	nonce string
	// repeat: an append answered with the position its request got
	// before (spool.OnceAppender), appending nothing.
	repeat bool
	err    error
	// parked: the read's connection was taken over to wait (park.go),
	// which answers it later.
	parked bool
	// anonymous: a request answered without a signature (/v1/health),
	// which anyone can send at will; its log lines are thinned out.
	anonymous bool
	// bodyRead: the handler began reading the request's body.
	bodyRead bool
}

// watchedBody is a request's body that notes in ri when the handler
// begins reading it (fail).
type watchedBody struct {
	io.ReadCloser
	ri *reqInfo
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.ri.bodyRead = true
	return b.ReadCloser.Read(p)
}

type reqInfoKey struct{}

func info(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(reqInfoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

// recorder notes the status and size of a response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rw *recorder) WriteHeader(code int) {
	rw.status = code
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(b []byte) (int, error) {
	n, err := rw.ResponseWriter.Write(b)
	rw.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// health answers that the server is up, with the earliest timestamp it
// accepts (HeaderEarliestTS): a device that probed a restarted server
// signs its next request after the restart fence, instead of having it
// refused once (503) and signing it again, a round trip per device when
// all devices of a server come back at once. In the first second after
// the start, when no timestamp is yet acceptable, the answer waits for it
// (as the fence's refusal does).
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	info(r).anonymous = true
	if r.ContentLength != 0 {
		// A health check has no body, and this one announced one: it is
		// answered without waiting for it, and its connection ends, as a
		// refusal's (Server.fail). net/http read the body before it wrote
		// the answer: one that announced a body and sent none held its
		// connection, unanswered, for the server's read timeout.
		closeUnread(w)
	}
	if s.stopping.Err() != nil {
		s.fail(w, r, errorf(ErrUnavailable, "shutting down"))
		return
	}
	now, open := s.waitOpen(r, s.now())
	if !open {
		return
	}
	w.Header().Set(HeaderEarliestTS, strconv.FormatInt(s.earliest(now), 10))
	w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// maxLogged is the most bytes of a request's method or path, or of a name
// or parameter taken from it, that a log line or an error's text carries.
// A request line may be up to a megabyte (net/http's MaxHeaderBytes), all
// of it the sender's choice: written whole, twice, into the line of a 404
// that anyone can ask for, a stranger filled the log with 100 MB a second
// over one connection.
const maxLogged = 256

// clip returns s if it is at most maxLogged bytes, else its first maxLogged
// bytes and how long it was.
func clip(s string) string {
	if len(s) <= maxLogged {
		return s
	}
	return s[:maxLogged] + "...(" + strconv.Itoa(len(s)) + " bytes)"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
