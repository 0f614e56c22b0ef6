package api

import (
	"net/http"
	"strings"
	"time"
)

// Metrics receives what the server observes, for monitoring. Its methods are
// called concurrently from request goroutines and must return quickly.
// Config.Metrics nil turns instrumentation off. No method is given a user
// name, a key or entry data: labels built from the arguments stay few and
// reveal nothing about users.
type Metrics interface {
	// Request is called once per request, after the answer: the method and
	// route pattern (e.g. "GET", "/v1/users/{user}/entries"; both "other"
	// for a request that matched no route) and the status sent.
	Request(method, route string, status int)
	// AuthFailure is called once per request refused by authentication or
	// authorization (401, 403, and the 503 and 429 of before_start and
	// nonce_budget) with one of the AuthReason constants.
	AuthFailure(reason string)
	// LongPoll is called with +1 when a read starts waiting for new entries
	// and with -1 when it stops waiting.
	LongPoll(delta int)
	// StoreAppend is called after each Store.Append made for an append
	// request, with its duration and error.
	StoreAppend(took time.Duration, err error)
	// Delivery is called once per append request signed by the spool key (a
	// delivery over HTTP), after the answer, with the status sent.
	Delivery(status int)
	// CheckpointHeld is called with the bytes a checkpoint upload takes
	// from Config.CheckpointMemory (its body and decoded keep list) when
	// it takes them, and with their negative when it gives them back.
	CheckpointHeld(delta int64)
	// CheckpointWaiting is called with +1 when a checkpoint upload starts
	// waiting for room in Config.CheckpointMemory and with -1 when it
	// stops waiting.
	CheckpointWaiting(delta int)
	// CheckpointRefused is called once per checkpoint upload refused for
	// its size or the server's memory, with CheckpointRefusedTooLarge
	// (413) or CheckpointRefusedMemory (503).
	CheckpointRefused(reason string)
	// AppendRefused is called once per append refused for the server's
	// memory before its body is read, with AppendRefusedMemory (503: no
	// room in Config.AppendMemory in time) or AppendRefusedKeyShare (429:
	// the key's appends in progress hold its share).
	AppendRefused(reason string)
	// ReadRefused is called once per read refused before its entries
	// are read for what reads hold in the server's memory, with
	// ReadRefusedMemory (503: no room in Config.ReadMemory in time),
	// ReadRefusedKeyShare (429: the key's reads hold its share of it) or
	// ReadRefusedKeyReads (429: MaxReadsPerKey of the key's reads hold
	// entries).
	ReadRefused(reason string)
}

// Reasons given to Metrics.AppendRefused.
const (
	AppendRefusedMemory   = "memory"    // 503: no room in AppendMemory within CheckpointWait
	AppendRefusedKeyShare = "key_share" // 429: the key's appends in progress hold its share
)

// AppendRefusals are the reasons given to Metrics.AppendRefused.
var AppendRefusals = []string{AppendRefusedMemory, AppendRefusedKeyShare}

// Reasons given to Metrics.ReadRefused.
const (
	ReadRefusedMemory   = "memory"    // 503: no room in ReadMemory within CheckpointWait
	ReadRefusedKeyShare = "key_share" // 429: the key's reads hold its share of ReadMemory
	ReadRefusedKeyReads = "key_reads" // 429: MaxReadsPerKey of the key's reads hold entries
)

// ReadRefusals are the reasons given to Metrics.ReadRefused.
var ReadRefusals = []string{ReadRefusedMemory, ReadRefusedKeyShare, ReadRefusedKeyReads}

// Reasons given to Metrics.CheckpointRefused.
const (
	CheckpointRefusedTooLarge = "too_large" // 413: body or keep list over the limits
	CheckpointRefusedMemory   = "memory"    // 503: no room in CheckpointMemory within CheckpointWait
)

// CheckpointRefusals are the reasons given to Metrics.CheckpointRefused.
var CheckpointRefusals = []string{CheckpointRefusedTooLarge, CheckpointRefusedMemory}

// Reasons given to Metrics.AuthFailure.
const (
	AuthReasonMissing           = "missing"             // no Authorization header, or several
	AuthReasonMalformed         = "malformed"           // the header does not parse
	AuthReasonStale             = "stale_timestamp"     // ts outside the allowed clock skew
	AuthReasonBadSignature      = "bad_signature"       // the signature does not verify
	AuthReasonReplayed          = "replayed"            // the nonce was used before
	AuthReasonBodyHash          = "body_hash"           // the body does not match the signed hash
	AuthReasonUnknownKey        = "unknown_key"         // the key is no user's (or another key owns the name)
	AuthReasonForbidden         = "forbidden"           // a user's key acting on another user's log
	AuthReasonSpoolKeyForbidden = "spool_key_forbidden" // the spool key doing more than append
	AuthReasonDeliveryKey       = "delivery_key"        // a delivery signed with a user's key, not the spool's
	AuthReasonBeforeStart       = "before_start"        // 503: signed before the server started (the restart rule)
	AuthReasonNonceBudget       = "nonce_budget"        // 429: the key's nonce budget is used up
)

// AuthReasons are all the AuthReason constants, for a monitor that shows
// every reason from the start.
var AuthReasons = []string{AuthReasonMissing, AuthReasonMalformed, AuthReasonStale, AuthReasonBadSignature,
	AuthReasonReplayed, AuthReasonBodyHash, AuthReasonUnknownKey, AuthReasonForbidden,
	AuthReasonSpoolKeyForbidden, AuthReasonDeliveryKey, AuthReasonBeforeStart, AuthReasonNonceBudget}

// noMetrics is the Metrics of a server configured without any.
type noMetrics struct{}

func (noMetrics) Request(string, string, int)      {}
func (noMetrics) AuthFailure(string)               {}
func (noMetrics) LongPoll(int)                     {}
func (noMetrics) StoreAppend(time.Duration, error) {}
func (noMetrics) Delivery(int)                     {}
func (noMetrics) CheckpointHeld(int64)             {}
func (noMetrics) CheckpointWaiting(int)            {}
func (noMetrics) CheckpointRefused(string)         {}
func (noMetrics) AppendRefused(string)             {}
func (noMetrics) ReadRefused(string)               {}

// observe reports an answered request to the metrics. r is the request as
// the mux saw it (with its Pattern).
func (s *Server) observe(r *http.Request, status int, ri *reqInfo) {
	method, route := "other", "other"
	if m, p, ok := strings.Cut(r.Pattern, " "); ok {
		method, route = m, p
	}
	s.cfg.Metrics.Request(method, route, status)
	if ri.spool {
		s.cfg.Metrics.Delivery(status)
	}
}
