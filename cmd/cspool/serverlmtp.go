package main

import (
	"flag"

	"cspool/internal/deliver"
)

// lmtpLimits are the bounds of cspool server's LMTP listener
// (docs/DELIVERY.md, "Limits").
type lmtpLimits struct {
	inflight     int64
	conns        int
	connsPerAddr int
}

func (l *lmtpLimits) register(fs *flag.FlagSet) {
	fs.Int64Var(&l.inflight, "lmtp-max-inflight", deliver.DefaultMaxInflightBytes,
		"bytes of memory LMTP messages being received and delivered may hold, all connections together")
	fs.IntVar(&l.conns, "lmtp-max-conns", deliver.DefaultMaxConns,
		"most LMTP connections open at once; more are answered 421")
	fs.IntVar(&l.connsPerAddr, "lmtp-max-conns-per-addr", deliver.DefaultMaxConnsPerAddr,
		"most LMTP connections open at once from one client address (IPv4, or IPv6 /64); more are answered 421")
}

func (l lmtpLimits) check() error {
	switch {
	case l.inflight <= 0:
		return usagef("--lmtp-max-inflight must be positive")
	case l.conns <= 0:
		return usagef("--lmtp-max-conns must be positive")
	case l.connsPerAddr <= 0:
		return usagef("--lmtp-max-conns-per-addr must be positive")
	}
	return nil
}

func (l lmtpLimits) apply(o *deliver.LMTPOptions) {
	o.MaxInflightBytes = l.inflight
	o.MaxConns = l.conns
	o.MaxConnsPerAddr = l.connsPerAddr
}
