package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"cspool/internal/spool"
)

// HeaderQuota, on the answer to a read of a log on a server with a quota
// (Config.Quota), is "USAGE/LIMIT": the bytes the user's log holds and the
// most deliveries may fill it to, in decimal (docs/API.md §3). A device
// near it writes a checkpoint as soon as mail it deleted frees anything,
// so that the spool takes their room back (docs/DELIVERY.md, "Quotas").
const HeaderQuota = "Cspool-Quota"

// setQuota writes HeaderQuota for user's read, if the server has a quota
// and its store keeps the usage. A usage it cannot read is left out: the
// header is a hint, and the read is answered as usual.
func (s *Server) setQuota(ctx context.Context, w http.ResponseWriter, user string) {
	if s.cfg.Quota <= 0 {
		return
	}
	q, ok := s.cfg.Store.(spool.Quotas)
	if !ok {
		return
	}
	u, err := q.Usage(ctx, user)
	if err != nil {
		return
	}
	w.Header().Set(HeaderQuota, strconv.FormatInt(u, 10)+"/"+strconv.FormatInt(s.cfg.Quota, 10))
}

// Quota is the user's usage against the spool's quota as the server
// stated it on a read (HeaderQuota).
type Quota struct {
	Usage, Limit int64
}

// Quota returns the usage of this client's user and the spool's quota
// that the last read's answer stated. ok is false when it stated none (no
// quota, or a server of an earlier release).
func (c *Client) Quota() (usage, limit int64, ok bool) {
	q := c.quota.Load()
	if q == nil {
		return 0, 0, false
	}
	return q.Usage, q.Limit, true
}

// learnQuota keeps a read answer's HeaderQuota, or forgets the one before
// if it has none or one out of form (the spool is not trusted: a value that
// does not parse, or a usage or limit below zero or a limit of zero, is
// taken as none).
func (c *Client) learnQuota(h http.Header) {
	us, ls, ok := strings.Cut(h.Get(HeaderQuota), "/")
	u, err1 := strconv.ParseInt(us, 10, 64)
	l, err2 := strconv.ParseInt(ls, 10, 64)
	if !ok || err1 != nil || err2 != nil || u < 0 || l <= 0 {
		c.quota.Store(nil)
		return
	}
	c.quota.Store(&Quota{Usage: u, Limit: l})
}
