package oci

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
			err := retry(t.Context(), time.Microsecond, slog.New(slog.DiscardHandler), "send x", func() error {
				tries++
				return c.err
			})
			if tries != c.tries || !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.says) || exitcode.Of(err) != c.code {
				t.Errorf("retry of %v: %d tries, %v (exit %d); want %d tries, %q, exit %d", c.err, tries, err, exitcode.Of(err), c.tries, c.says, c.code)
			}
		})
	}
}
