package api

import (
	"sync"
	"time"
)

// refusalLogsPerSecond bounds the log lines of sampled refusals (those
// anyone can repeat at will: before the signature was checked, replays, a
// caller over its share); the next line logged says how many were left out.
const refusalLogsPerSecond = 20

// pollCounter counts each user's reads waiting for new entries.
type pollCounter struct {
	mu      sync.Mutex
	waiting map[string]int
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
	if p.waiting[user]--; p.waiting[user] <= 0 {
		delete(p.waiting, user)
	}
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
