package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/docker/distribution/registry/api/errcode"
	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/types"
	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// errStalled is the cause of a transfer cut for moving no data.
var errStalled = errors.New("no data moved within the stall timeout")

// errHeld is the cause of a send cut for getting no answer once its source
// was read to the end.
var errHeld = errors.New("no answer within the stall timeout after the whole file was sent")

// errNoAnswer is the cause of a request cut for getting no answer.
var errNoAnswer = errors.New("no answer within the stall timeout")

// watchdog cancels its context when no data moves for a while.
type watchdog struct {
	timer *time.Timer
	after time.Duration
	// moving is set once data has moved: until then, the request has had
	// no answer (a send reads its source only once the registry took it).
	moving atomic.Bool
	// drained is set once the source has been read to its end.
	drained atomic.Bool
}

func newWatchdog(ctx context.Context, after time.Duration) (context.Context, *watchdog, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{after: after}
	w.timer = time.AfterFunc(after, func() {
		if w.drained.Load() {
			// Most often a proxy that reads a request body whole before it
			// passes it on, and so answers only once it has.
			cancel(fmt.Errorf("%w (%s): a proxy that buffers request bodies (nginx's proxy_request_buffering) answers only once it has passed the file on; turn that off, or raise --stall-timeout", errHeld, after))
			return
		}
		if !w.moving.Load() {
			cancel(fmt.Errorf("%w (%s)", errNoAnswer, after))
			return
		}
		cancel(fmt.Errorf("%w (%s)", errStalled, after))
	})
	return ctx, w, func() {
		w.timer.Stop()
		cancel(nil)
	}
}

func (w *watchdog) moved() {
	w.moving.Store(true)
	w.timer.Reset(w.after)
}

// meter passes a transfer through, feeding the watchdog, logging progress
// and remembering the error of the source itself, which is never retried.
type meter struct {
	r     io.Reader
	dog   *watchdog
	log   *slog.Logger
	what  string
	size  int64
	n     int64
	every time.Duration
	last  time.Time
	err   error
}

func (m *meter) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	m.n += int64(n)
	if n > 0 {
		m.dog.moved()
	}
	if err == io.EOF {
		m.dog.drained.Store(true)
	}
	if err != nil && err != io.EOF {
		m.err = err
	}
	if now := time.Now(); now.Sub(m.last) >= m.every {
		m.last = now
		m.log.Info(m.what, "bytes", m.n, "of", m.size)
	}
	return n, err
}

// readCloser closes the stream and stops its watchdog.
type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

const attempts = 5

// unanswered is how many attempts in a row may get no answer at all before
// retry gives up: a host silent twice over is down or out of reach, and
// three more stall timeouts would only keep the user waiting.
const unanswered = 2

// retry runs op until it succeeds, fails for good, has failed attempts
// times or has had no answer unanswered times in a row, waiting RetryBase,
// 2*RetryBase, ... between attempts. An attempt during which the registry
// answered 429 Too Many Requests is the last: containers/image has waited
// and asked again already.
func (d *Dest) retry(ctx context.Context, what string, op func() error) error {
	wait := d.opts.RetryBase
	silent := 0
	for i := 1; ; i++ {
		start := time.Now()
		err := op()
		if w, ok := rateLimited(d.host(), start); ok && err != nil {
			return rateLimitError(err, d.host(), w)
		}
		if errors.Is(err, errNoAnswer) {
			silent++
		} else {
			silent = 0
		}
		if err == nil || i == attempts || silent == unanswered || !transient(ctx, err, d.endpoint()) {
			if isCode(err, errcode.ErrorCodeTooManyRequests) {
				// Answered to a request with a body, which containers/
				// image does not ask again.
				return rateLimitError(err, d.host(), rateWait{})
			}
			return settingsError(layoutError(err), d.endpoint())
		}
		d.opts.Log.Warn(what+" failed; retrying", "attempt", i, "in", wait, "error", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// permanent marks an error that a retry cannot cure.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// transient reports whether err, of a request to the registry at at, may
// pass on a retry: anything but the caller's own cancellation, settings
// that cannot work (settingsHint), a refused request or manifest, a source
// that failed its check, or a file system that is full, takes no writes or
// no file this large.
func transient(ctx context.Context, err error, at endpoint) bool {
	var p permanent
	var rejected types.ManifestTypeRejectedError
	switch {
	case ctx.Err() != nil, errors.As(err, &p), notFound(err), settingsHint(err, at) != "",
		isCode(err, errcode.ErrorCodeUnsupported), errors.As(err, &rejected), atomicfile.NoRoom(err), unwritable(err), errors.Is(err, unix.EFBIG),
		malformedDigest(err):
		return false
	}
	return true
}

// malformedDigest reports whether err is about a digest that is not one:
// in a layout, an index entry damaged, or written so by another tool.
func malformedDigest(err error) bool {
	return errors.Is(err, digest.ErrDigestInvalidFormat) || errors.Is(err, digest.ErrDigestInvalidLength) || errors.Is(err, digest.ErrDigestUnsupported)
}

// unwritable reports whether err is a file system that takes no writes
// from this process: media mounted read-only, or a directory, such as a
// volume without the pod's fsGroup, that is not this user's to write.
func unwritable(err error) bool {
	return errors.Is(err, unix.EROFS) || errors.Is(err, fs.ErrPermission)
}

// layoutError says what to do about a layout's file system that no retry
// can cure.
func layoutError(err error) error {
	switch {
	case atomicfile.NoRoom(err):
		return fmt.Errorf("%w: the file system is full; free space there, or give a destination with room for the backup", err)
	case errors.Is(err, unix.EROFS):
		return exitcode.With(exitcode.Usage, fmt.Errorf("%w: mount the media read-write, or give another destination", err))
	}
	return atomicfile.TooLarge(err)
}
