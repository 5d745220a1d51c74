package progress

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{256 << 20, "256.0 MiB"},
		{3 << 30, "3.0 GiB"},
	}
	for _, tt := range tests {
		if got := Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// recordSink hands each log record to the test as it is emitted.
type recordSink chan slog.Record

func (s recordSink) Enabled(context.Context, slog.Level) bool      { return true }
func (s recordSink) Handle(_ context.Context, r slog.Record) error { s <- r; return nil }
func (s recordSink) WithAttrs([]slog.Attr) slog.Handler            { return s }
func (s recordSink) WithGroup(string) slog.Handler                 { return s }

func TestMeterReports(t *testing.T) {
	sink := make(recordSink, 16)
	m := Start(context.Background(), slog.New(sink), "snapshot", 4<<20, time.Millisecond)
	m.Write(make([]byte, 1<<20))
	var msg string
	for !strings.Contains(msg, "(25%)") {
		select {
		case r := <-sink:
			msg = r.Message
		case <-time.After(10 * time.Second):
			t.Fatalf("no progress line with the percentage; last %q", msg)
		}
	}
	m.Stop()
	m.Stop()
	if m.Done() != 1<<20 {
		t.Errorf("Done() = %d", m.Done())
	}
	for _, want := range []string{"1.0 MiB of 4.0 MiB", "ETA", "/s"} {
		if !strings.Contains(msg, want) {
			t.Errorf("progress line lacks %q: %q", want, msg)
		}
	}
}

func TestWatch(t *testing.T) {
	m := Start(context.Background(), slog.New(make(recordSink, 100)), "x", 0, time.Hour)
	defer m.Stop()
	stalled := make(chan struct{})
	stop := m.Watch(20*time.Millisecond, func() { close(stalled) })
	defer stop()
	select {
	case <-stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("a meter with no bytes was not reported stalled")
	}
}

func TestWatchStopsQuietly(t *testing.T) {
	m := Start(context.Background(), slog.New(make(recordSink, 100)), "x", 0, time.Hour)
	defer m.Stop()
	stop := m.Watch(time.Hour, func() { t.Error("stalled called after stop") })
	m.Write([]byte("data"))
	stop()
}

func TestMeterRestart(t *testing.T) {
	m := Start(context.Background(), slog.New(make(recordSink, 100)), "x", 4, time.Hour)
	defer m.Stop()
	m.Write([]byte("abc"))
	m.Restart()
	m.Write([]byte("a"))
	if m.Done() != 1 {
		t.Errorf("Done() after Restart = %d, want 1", m.Done())
	}
}
