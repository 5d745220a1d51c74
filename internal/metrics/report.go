package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// DefaultPushTimeout bounds a push: a Pushgateway that is down or slow must
// not hold up the Task that ran the backup.
const DefaultPushTimeout = 10 * time.Second

// Sinks are where a run is reported; a zero field is not used.
type Sinks struct {
	Push PushURL
	// File is a path for node-exporter's textfile collector (*.prom).
	File string
	// Timeout bounds the push; zero means DefaultPushTimeout.
	Timeout time.Duration
}

// Report pushes the run and writes the metrics file. A sink that fails is
// logged as a warning and nothing more: the run's outcome stands. It runs
// even when ctx has ended, since a run that was cancelled is worth
// reporting too, for at most the push timeout.
func (s Sinks) Report(ctx context.Context, log *slog.Logger, r *Run, o Outcome) {
	if r.Skipped {
		return
	}
	if s.File != "" {
		if err := writeFile(s.File, r, o); err != nil {
			log.Warn("metrics file not written: " + err.Error())
		}
	}
	if s.Push.IsZero() {
		return
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultPushTimeout
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	client := &http.Client{Timeout: timeout}
	if err := s.Push.push(ctx, client, r, o); err != nil {
		log.Warn("metrics not pushed: " + err.Error())
		return
	}
	log.Info("metrics pushed to " + s.Push.String())
}
