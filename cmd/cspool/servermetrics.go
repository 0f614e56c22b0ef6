package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cspool/internal/api"
	"cspool/internal/deliver"
	"cspool/internal/metrics"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/sqlitestore"
)

// metricsRun is the metrics listener of a running server.
type metricsRun struct {
	spool *metrics.Spool
	ln    net.Listener
	srv   *http.Server
}

// startMetrics registers the server's metrics, the logs' usage against the
// quota included, listens on addr and serves GET /metrics
// (docs/METRICS.md). Nothing it serves names a user.
func (s *serverRun) startMetrics(addr string, store spool.Store, quotas spool.Quotas, quota int64, errc chan<- error) (*metricsRun, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, withHint(fmt.Errorf("listening for metrics on %s: %w", addr, err), "pick another --metrics-addr, or leave it empty to turn metrics off")
	}
	return s.serveMetrics(ln, store, quotas, quota, errc), nil
}

// serveMetrics serves GET /metrics on ln. A listener beyond localhost
// (--metrics-addr :9399, 0.0.0.0:9399, a public address) is warned about
// on standard error and in the log at every start: the endpoint has no
// login and no TLS. On loopback, a request whose Host does not name this
// machine gets 421 (knownHostOnly).
func (s *serverRun) serveMetrics(ln net.Listener, store spool.Store, quotas spool.Quotas, quota int64, errc chan<- error) *metricsRun {
	addr := ln.Addr().String()
	if beyondLocalhost(addr) {
		warnExposed(s.e.stderr, s.log, metricsExposure, addr)
	}
	reg, sp := newServerRegistry(store, quotas, quota)
	m := &metricsRun{spool: sp, ln: ln}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg, s.log))
	m.srv = &http.Server{Handler: knownHostOnly(addr, mux), ReadHeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute}
	go func() {
		if err := m.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving metrics on %s: %w", addr, err)
		}
	}()
	return m
}

func (m *metricsRun) close() {
	if m != nil {
		m.srv.Close()
	}
}

// newServerRegistry registers every metric of the server (docs/METRICS.md):
// the process and Go runtime collectors, the spool's families, the logs'
// usage against the quota and the store's own figures.
func newServerRegistry(store spool.Store, quotas spool.Quotas, quota int64) (*prometheus.Registry, *metrics.Spool) {
	reg := metrics.NewRegistry()
	sp := metrics.NewSpool(reg, metrics.Known{LMTPOutcomes: deliver.Outcomes, AuthReasons: api.AuthReasons,
		CheckpointRefusals: api.CheckpointRefusals, AppendRefusals: api.AppendRefusals,
		ReadRefusals: api.ReadRefusals})
	metrics.RegisterUsage(reg, quotas, quota)
	registerStoreMetrics(reg, store)
	return reg, sp
}

// registerStoreMetrics adds the size of the store and, for SQLite, its
// append and commit counters (group commit shows as commits < appends).
func registerStoreMetrics(reg prometheus.Registerer, store spool.Store) {
	size := func(backend string) prometheus.GaugeOpts {
		return prometheus.GaugeOpts{Name: "cspool_store_size_bytes",
			Help:        "Bytes the store occupies: SQLite database and WAL files, or PostgreSQL tables with indexes and TOAST.",
			ConstLabels: prometheus.Labels{"backend": backend}}
	}
	switch st := store.(type) {
	case *sqlitestore.Store:
		reg.MustRegister(metrics.OptionalGauge(size("sqlite"), func() (float64, bool) {
			var n int64
			for _, name := range []string{sqlitestore.DBName, sqlitestore.DBName + "-wal"} {
				if fi, err := os.Stat(filepath.Join(st.Dir(), name)); err == nil {
					n += fi.Size()
				}
			}
			return float64(n), true
		}))
		counter := func(name, help string, f func(sqlitestore.Stats) int64) prometheus.Collector {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
				func() float64 { return float64(f(st.Stats())) })
		}
		reg.MustRegister(
			counter("cspool_sqlite_appends_total", "Append calls committed by the SQLite store.",
				func(s sqlitestore.Stats) int64 { return s.Appends }),
			counter("cspool_sqlite_entries_total", "Entries appended to the SQLite store.",
				func(s sqlitestore.Stats) int64 { return s.Entries }),
			counter("cspool_sqlite_commits_total", "Write transactions (one fsync each) of the SQLite store.",
				func(s sqlitestore.Stats) int64 { return s.Commits }),
		)
	case *pgstore.Store:
		reg.MustRegister(metrics.OptionalGauge(size("postgres"), func() (float64, bool) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var n int64
			err := st.Pool().QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
				FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
				WHERE c.relkind = 'r' AND ns.nspname = current_schema()
				AND c.relname IN ('cspool_logs', 'cspool_entries', 'cspool_checkpoints')`).Scan(&n)
			return float64(n), err == nil // left out of the scrape when the database does not answer
		}))
	}
}
