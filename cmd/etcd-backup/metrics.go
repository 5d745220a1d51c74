package main

import (
	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/metrics"
)

// reportingCommands push and write metrics: the ones that do work an
// operator wants to be alerted about when it fails or stops.
var reportingCommands = []string{"save", "upload", "verify", "prune"}

// metricsFlags are the flags of a reporting command.
type metricsFlags struct {
	pushURL, file string
}

func addMetricsFlags(fs *pflag.FlagSet) *metricsFlags {
	m := &metricsFlags{}
	fs.StringVar(&m.pushURL, "metrics-push-url", "", "Prometheus Pushgateway to push this run's metrics to, on success and failure: http(s)://[USER:PASSWORD@]HOST:PORT; a failed push is only a warning")
	fs.StringVar(&m.file, "metrics-file", "", "write this run's metrics to this file (*.prom, replaced atomically) for node-exporter's textfile collector; one file per command")
	return m
}

// sinks checks the flags; nil flags (a command that does not report) give
// no sinks.
func (m *metricsFlags) sinks() (metrics.Sinks, error) {
	var s metrics.Sinks
	if m == nil {
		return s, nil
	}
	s.File = m.file
	if m.pushURL != "" {
		u, err := metrics.ParsePushURL(m.pushURL)
		if err != nil {
			return s, usage("--metrics-push-url: %v", err)
		}
		s.Push = u
	}
	return s, nil
}
