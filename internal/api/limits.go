package api

import (
	"slices"
	"sync"
	"time"
)

// refusalLogsPerSecond bounds the log lines of sampled refusals (those
// anyone can repeat at will: before the signature was checked, replays, a
// caller over its share); the next line logged says how many were left out.
const refusalLogsPerSecond = 20

// MaxHeaderBytes bounds a request's header (its request line and fields)
// as the HTTP server reads it (http.Server.MaxHeaderBytes, which reads up
// to 4 KiB past it); a request over it gets 431 from net/http, before any
// handler. The API's requests carry well under 1 KiB of header (the
// Authorization field is about 330 bytes); a proxy's fields added leave
// room. net/http's default, a megabyte, let anyone send a megabyte of
// one-byte fields to /v1/health, or to any route before its signature
// was looked at, each such request costing the server 66 ms of CPU
// to parse where a plain request cost a fiftieth of a millisecond.
const MaxHeaderBytes = 16 << 10

// pollCounter counts each user's reads waiting for new entries, and keeps
// those of them that are parked (park.go), so that a user's full share can
// be rid of the parked reads whose clients went away (Server.acquirePoll).
// A parked read's place is given back once, by whichever comes first: its
// wait ending (releaseParked from answerParked) or its client found gone
// (releaseParked from freeGone).
type pollCounter struct {
	mu      sync.Mutex
	waiting map[string]int
	parked  map[string][]*parked // user -> its parked reads, each counted in waiting
}

// acquire counts one more waiting read of user, unless limit are waiting.
func (p *pollCounter) acquire(user string, limit int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiting[user] >= limit {
		return false
	}
	p.waiting[user]++
	return true
}

func (p *pollCounter) release(user string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(user)
}

func (p *pollCounter) releaseLocked(user string) {
	if p.waiting[user]--; p.waiting[user] <= 0 {
		delete(p.waiting, user)
	}
}

// hold records pk, whose place acquire counted, as parked.
func (p *pollCounter) hold(pk *parked) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked[pk.user] = append(p.parked[pk.user], pk)
}

// releaseParked gives pk's place back, unless it was given back already,
// and reports whether it did.
func (p *pollCounter) releaseParked(pk *parked) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.parked[pk.user]
	i := slices.Index(list, pk)
	if i < 0 {
		return false
	}
	if list = slices.Delete(list, i, i+1); len(list) == 0 {
		delete(p.parked, pk.user)
	} else {
		p.parked[pk.user] = list
	}
	p.releaseLocked(pk.user)
	return true
}

// parkedOf returns the reads of user parked now.
func (p *pollCounter) parkedOf(user string) []*parked {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.parked[user])
}

// logSampler lets through at most perSecond log lines per second.
type logSampler struct {
	perSecond int

	mu         sync.Mutex
	second     int64
	logged     int
	suppressed int
}

// allow reports whether a line may be logged now and, if so, how many were
// left out since the last one.
func (l *logSampler) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sec := now.Unix(); sec != l.second {
		l.second, l.logged = sec, 0
	}
	if l.logged >= l.perSecond {
		l.suppressed++
		return false, 0
	}
	l.logged++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
