// Package progress reports the progress of long transfers: an io.Writer that
// counts bytes, and a ticker that logs bytes done, total, rate and ETA.
package progress

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Meter counts bytes written through it and logs progress every interval
// until Stop is called.
type Meter struct {
	done  atomic.Int64
	total int64
	start atomic.Int64 // UnixNano; Restart moves it
	what  string
	log   *slog.Logger

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// Start begins reporting on what; total is the expected size (0 if unknown).
func Start(ctx context.Context, log *slog.Logger, what string, total int64, interval time.Duration) *Meter {
	m := &Meter{total: total, what: what, log: log, stop: make(chan struct{})}
	m.start.Store(time.Now().UnixNano())
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				m.report(ctx)
			case <-m.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return m
}

// Write counts p; it never fails, so it can sit in an io.MultiWriter.
func (m *Meter) Write(p []byte) (int, error) {
	m.done.Add(int64(len(p)))
	return len(p), nil
}

// Watch calls stalled once if no byte arrives for timeout, checking a few
// times per timeout. The returned function stops watching.
func (m *Meter) Watch(timeout time.Duration, stalled func()) (stop func()) {
	return Watch(m.done.Load, timeout, stalled)
}

// Watch calls stalled once if count stays the same for timeout, checking
// a few times per timeout. The returned function stops watching.
func Watch(count func() int64, timeout time.Duration, stalled func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(timeout / 4)
		defer t.Stop()
		last, since := count(), time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				if n := count(); n != last {
					last, since = n, now
				} else if now.Sub(since) >= timeout {
					stalled()
					return
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// Restart counts from zero again, for a transfer that starts over.
func (m *Meter) Restart() {
	m.start.Store(time.Now().UnixNano())
	m.done.Store(0)
}

// Done returns the bytes counted so far.
func (m *Meter) Done() int64 { return m.done.Load() }

// Stop ends reporting. It is safe to call more than once.
func (m *Meter) Stop() {
	m.once.Do(func() { close(m.stop) })
	m.wg.Wait()
}

func (m *Meter) report(ctx context.Context) {
	done := m.done.Load()
	elapsed := time.Since(time.Unix(0, m.start.Load()))
	rate := float64(done) / elapsed.Seconds()
	attrs := []any{"done", done, "rate", Bytes(int64(rate)) + "/s"}
	msg := fmt.Sprintf("%s: %s", m.what, Bytes(done))
	if m.total > 0 {
		attrs = append(attrs, "total", m.total)
		msg += fmt.Sprintf(" of %s (%d%%)", Bytes(m.total), min(100, done*100/m.total))
		if rate > 0 && done < m.total {
			eta := time.Duration(float64(m.total-done) / rate * float64(time.Second)).Round(time.Second)
			attrs = append(attrs, "eta", eta.String())
			msg += fmt.Sprintf(", ETA %s", eta)
		}
	}
	msg += fmt.Sprintf(", %s/s", Bytes(int64(rate)))
	m.log.InfoContext(ctx, msg, attrs...)
}

// Bytes formats n in binary units, as operators read sizes.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
