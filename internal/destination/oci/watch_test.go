package oci

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// TestRetryFileSystem: a destination whose file system is full (a layout
// on removable media), read-only, or not this user's to write fails at the
// first attempt; full, it says what to do, exit 1, as a full disk is for
// save; read-only, that the media must be mounted read-write, exit 2. A
// retry would only fail again, after a minute of warnings. Other failures
// are retried. None of these can be had on demand without privileges: the
// error is the one containers/image returns.
func TestRetryFileSystem(t *testing.T) {
	const blob = "/media/usb/layout/oci-put-blob1"
	cases := []struct {
		name  string
		err   error
		tries int
		says  string
		code  int
	}{
		{"no space", &fs.PathError{Op: "write", Path: blob, Err: unix.ENOSPC}, 1, "the file system is full", exitcode.Failure},
		{"over quota", &fs.PathError{Op: "write", Path: blob, Err: unix.EDQUOT}, 1, "the file system is full", exitcode.Failure},
		{"read-only", &fs.PathError{Op: "open", Path: blob, Err: unix.EROFS}, 1, "mount the media read-write", exitcode.Usage},
		{"not this user's", &fs.PathError{Op: "open", Path: blob, Err: unix.EACCES}, 1, "permission denied", exitcode.Failure},
		{"too large for FAT", &fs.PathError{Op: "write", Path: blob, Err: unix.EFBIG}, 1, "cannot hold a file this large", exitcode.Usage},
		{"reset", io.ErrUnexpectedEOF, attempts, io.ErrUnexpectedEOF.Error(), exitcode.Failure},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tries := 0
			d := &Dest{t: layoutDir(t.TempDir()), opts: destination.Options{RetryBase: time.Microsecond, Log: slog.New(slog.DiscardHandler)}}
			err := d.retry(t.Context(), "send x", func() error {
				tries++
				return c.err
			})
			if tries != c.tries || !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.says) || exitcode.Of(err) != c.code {
				t.Errorf("retry of %v: %d tries, %v (exit %d); want %d tries, %q, exit %d", c.err, tries, err, exitcode.Of(err), c.tries, c.says, c.code)
			}
		})
	}
}

// TestLockError: a layout whose file system takes no locks says so, exit
// 2, where it was reported as held by another run for the whole wait; one
// another run holds still says that.
func TestLockError(t *testing.T) {
	l := layoutDir(t.TempDir())
	tests := []struct {
		name string
		err  error
		code int
		says string
	}{
		{"held", unix.EWOULDBLOCK, exitcode.Failure, "is held by another run of etcd-backup (an upload or a prune) for more than 30s"},
		{"no lock service", unix.ENOLCK, exitcode.Usage, "the file system there takes no locks"},
		{"not supported", unix.ENOTSUP, exitcode.Usage, "mount with local_lock=flock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := l.lockError(tt.err, 30*time.Second)
			if exitcode.Of(err) != tt.code || !strings.Contains(err.Error(), tt.says) || !errors.Is(err, tt.err) {
				t.Errorf("%v (exit %d), want exit %d saying %q", err, exitcode.Of(err), tt.code, tt.says)
			}
		})
	}
}

// TestRateLimitError: the wait a 429's Retry-After asks for is said in
// seconds or as a time; none, zero or one that does not parse is left out;
// an error that says it already is not told again.
func TestRateLimitError(t *testing.T) {
	tests := []struct {
		retryAfter string
		says       string
	}{
		{"30", "(429 Too Many Requests) and asks to wait 30s; run again later"},
		{"0", "(429 Too Many Requests); run again later"},
		{"", "(429 Too Many Requests); run again later"},
		{"Fri, 04 Dec 2026 23:00:00 GMT", "(429 Too Many Requests) and asks to wait until 2026-12-04T23:00:00Z; run again later"},
		{"soon", "(429 Too Many Requests); run again later"},
	}
	for _, tt := range tests {
		err := rateLimitError(io.ErrUnexpectedEOF, "mirror.example:5000", rateWait{retryAfter: tt.retryAfter})
		if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "mirror.example:5000 is rate limiting this client "+tt.says) {
			t.Errorf("Retry-After %q: %v; want it to say %q", tt.retryAfter, err, tt.says)
		}
	}
	said := rateLimitError(io.ErrUnexpectedEOF, "mirror.example:5000", rateWait{})
	if again := rateLimitError(fmt.Errorf("read x: %w", said), "mirror.example:5000", rateWait{}); strings.Count(again.Error(), "rate limiting") != 1 {
		t.Errorf("said twice: %v", again)
	}
}
