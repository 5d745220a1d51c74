package oci

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// containers/image logs through logrus's standard logger, which belongs to
// the whole process; so does what is kept here. Left alone, its lines reach
// stderr in logrus's own format, beside the ones --log-format chose (a text
// line in a JSON log), and what it says only at debug level, that a
// registry answered 429 Too Many Requests and how long it then waits,
// reaches no error.
var library struct {
	once  sync.Once
	log   atomic.Pointer[slog.Logger]
	mu    sync.Mutex
	said  map[string]bool     // lines passed on: each client says them again
	waits map[string]rateWait // by registry host
	// retryAfter is the Retry-After of the 429 whose wait is logged next.
	retryAfter string
}

// rateWait is a registry's 429 Too Many Requests, after which
// containers/image waited to ask again.
type rateWait struct {
	retryAfter string // the answer's Retry-After, if it had one
	at         time.Time
}

// CaptureLibraryLog takes logrus's standard logger over for the rest of the
// process: containers/image's lines at info and above go to log, and each
// 429 wait it logs at debug level is kept for the retries of the Dests on
// that registry (see Dest.retry). A later call replaces log.
func CaptureLibraryLog(log *slog.Logger) {
	library.mu.Lock()
	library.said = map[string]bool{}
	library.mu.Unlock()
	library.log.Store(log)
	library.once.Do(func() {
		l := logrus.StandardLogger()
		l.SetOutput(io.Discard)
		l.SetFormatter(unformatted{})
		l.SetLevel(logrus.DebugLevel)
		l.AddHook(libraryHook{})
	})
}

// unformatted spares formatting lines that go nowhere.
type unformatted struct{}

func (unformatted) Format(*logrus.Entry) ([]byte, error) { return nil, nil }

type libraryHook struct{}

func (libraryHook) Levels() []logrus.Level { return logrus.AllLevels }

func (libraryHook) Fire(e *logrus.Entry) error {
	// The distribution registry, which tests run in their own process,
	// logs through the same logger, always with fields; containers/image
	// logs plain messages.
	if len(e.Data) > 0 {
		return nil
	}
	if e.Level >= logrus.DebugLevel {
		noteRateWait(e.Message, e.Time)
		return nil
	}
	level := slog.LevelInfo
	switch {
	case e.Level <= logrus.ErrorLevel:
		level = slog.LevelError
	case e.Level == logrus.WarnLevel:
		level = slog.LevelWarn
	}
	if log := library.log.Load(); log != nil && firstSaid(e.Message) {
		log.Log(e.Context, level, e.Message, "from", "containers/image")
	}
	return nil
}

// firstSaid reports whether msg is new. containers/image says some things
// once per client, such as a registry's Warning header, and list opens
// one client per tag.
func firstSaid(msg string) bool {
	library.mu.Lock()
	defer library.mu.Unlock()
	if library.said[msg] {
		return false
	}
	if len(library.said) < 1000 {
		library.said[msg] = true
	}
	return true
}

// noteRateWait keeps what containers/image logs of a 429 before it asks
// again: `Detected 'Retry-After' header "30"`, then "Too many requests to
// URL: sleeping for 30.000000 seconds before next attempt".
func noteRateWait(msg string, at time.Time) {
	library.mu.Lock()
	defer library.mu.Unlock()
	if v, ok := strings.CutPrefix(msg, "Detected 'Retry-After' header "); ok {
		library.retryAfter, _ = strconv.Unquote(v)
		return
	}
	rest, ok := strings.CutPrefix(msg, "Too many requests to ")
	if !ok {
		return
	}
	where, _, _ := strings.Cut(rest, ": sleeping for ")
	u, err := url.Parse(where)
	if err != nil || u.Host == "" {
		return
	}
	if library.waits == nil {
		library.waits = map[string]rateWait{}
	}
	library.waits[u.Host] = rateWait{retryAfter: library.retryAfter, at: at}
	library.retryAfter = ""
}

// rateLimited reports the 429 Too Many Requests that the registry at host
// answered since t, if it answered one.
func rateLimited(host string, t time.Time) (rateWait, bool) {
	library.mu.Lock()
	defer library.mu.Unlock()
	w, ok := library.waits[host]
	return w, ok && !w.at.Before(t)
}

// rateLimitError says that the registry at host rate limits this client,
// unless err says so already. containers/image has by then waited and
// asked again, up to five times, or was cut off waiting by the stall
// timeout: asking again at once only adds to the load that made the
// registry refuse.
func rateLimitError(err error, host string, w rateWait) error {
	if errors.As(err, new(*rateLimitedError)) {
		return err
	}
	return &rateLimitedError{err, fmt.Sprintf("%s is rate limiting this client (429 Too Many Requests)%s; run again later, or ask the registry's administrators to raise this account's limit", host, w.asked())}
}

// asked says how long the Retry-After asked to wait, in seconds or as a
// time; "" for none, zero, or one that does not parse.
func (w rateWait) asked() string {
	if s, err := strconv.ParseUint(w.retryAfter, 10, 32); err == nil && s > 0 {
		return fmt.Sprintf(" and asks to wait %s", time.Duration(s)*time.Second)
	}
	if t, err := http.ParseTime(w.retryAfter); err == nil {
		return " and asks to wait until " + t.UTC().Format(time.RFC3339)
	}
	return ""
}

// rateLimitedError is err, which a registry's rate limit caused, and what
// to do about it.
type rateLimitedError struct {
	err  error
	hint string
}

func (e *rateLimitedError) Error() string { return e.err.Error() + ": " + e.hint }
func (e *rateLimitedError) Unwrap() error { return e.err }
