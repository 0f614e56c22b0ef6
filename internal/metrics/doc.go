// Package metrics keeps counters, gauges and histograms in a Registry and
// writes them in the Prometheus text exposition format, version 0.0.4.
//
// Implementation notes:
//
//   - There are no package globals: a program makes one Registry, passes it
//     (or the metric values registered in it) to whatever it instruments, and
//     serves Registry.Handler on a listener of its own.
//   - Registering a metric with an invalid or duplicate name, or using a
//     vector with the wrong number of label values, is a programming error
//     and panics at once, like a bad regular expression in regexp.MustCompile.
//   - Label values are escaped (backslash, double quote, line feed) and help
//     texts too (backslash, line feed), as the format requires. Families are
//     written sorted by name, the series of a family sorted by label values,
//     so the output is stable from one scrape to the next.
//   - A histogram's buckets are cumulative and written with the upper bound
//     le="+Inf" equal to _count; one mutex per histogram keeps _bucket, _sum
//     and _count of one scrape consistent with each other.
//   - Label values come from the program, never from peers, unless the caller
//     bounds them: every distinct value is a series kept forever.
//
// Spool holds the metrics of `cspool server` (docs/METRICS.md).
package metrics
