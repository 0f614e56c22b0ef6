// Package metrics is what `cspool server` exports to Prometheus
// (docs/METRICS.md), on github.com/prometheus/client_golang.
//
// Implementation notes:
//
//   - There are no package globals: a program makes one registry
//     (NewRegistry: the process and Go runtime collectors in a registry of
//     its own, not the library's default one), registers its metrics in it
//     and serves Handler on a listener of its own.
//   - Spool holds the server's own families and the hooks the API server
//     and the LMTP listener call; RegisterUsage adds the logs' usage against
//     the quota, OptionalGauge a figure a scrape leaves out rather than
//     invent when it cannot be read.
//   - Label values come from fixed sets in the code (route patterns, status
//     codes, outcomes, reasons), never from peers: every distinct value is a
//     series kept forever, so none may name a user.
package metrics
