// Package logging builds the loggers behind --log-format: plain lines that
// read well in `oc logs`, or JSON for log pipelines.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Formats accepted by New.
const (
	Text = "text"
	JSON = "json"
)

// New returns a logger writing to w in format. Either format leaves out
// the query of every URL in a line (see hideQueries).
func New(w io.Writer, format string) (*slog.Logger, error) {
	switch format {
	case Text:
		return slog.New(&lineHandler{w: w, mu: &sync.Mutex{}}), nil
	case JSON:
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: hideQueriesAttr})), nil
	}
	return nil, fmt.Errorf("log format %q: want %s or %s", format, Text, JSON)
}

// urlQuery is the query of an http(s) URL within a line.
var urlQuery = regexp.MustCompile(`(https?://[^\s"'?#]+)\?[^\s"']*`)

// hideQueries replaces the query of each http(s) URL in s with "?…". A
// registry that keeps its blobs in object storage sends each download to
// a presigned URL, whose query (X-Amz-Signature, X-Goog-Signature) lets
// whoever holds it read that blob, a snapshot with every Secret, until it
// expires; net/http quotes the URL whole in its errors.
func hideQueries(s string) string { return urlQuery.ReplaceAllString(s, "$1?…") }

// hideQueriesAttr is hideQueries for the JSON handler: the message and
// every value that prints as text.
func hideQueriesAttr(_ []string, a slog.Attr) slog.Attr {
	if k := a.Value.Kind(); k != slog.KindString && k != slog.KindAny {
		return a
	}
	s := a.Value.String()
	if hidden := hideQueries(s); hidden != s {
		a.Value = slog.StringValue(hidden)
	}
	return a
}

// lineHandler writes "TIME [LEVEL ]message key=value ...": the message first,
// as the operator's own scripts print it; the level only when it is not INFO.
type lineHandler struct {
	w     io.Writer
	mu    *sync.Mutex
	attrs []slog.Attr
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Time.UTC().Format(time.RFC3339))
	b.WriteByte(' ')
	if r.Level != slog.LevelInfo {
		b.WriteString(r.Level.String())
		b.WriteByte(' ')
	}
	b.WriteString(hideQueries(r.Message))
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%s", a.Key, quote(hideQueries(a.Value.String())))
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *lineHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &lineHandler{w: h.w, mu: h.mu, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

// WithGroup is not used by this program; groups are flattened.
func (h *lineHandler) WithGroup(string) slog.Handler { return h }

func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return fmt.Sprintf("%q", s)
	}
	return s
}
