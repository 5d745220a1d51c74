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

// TestRetryFull: a destination whose file system is full (a layout on
// removable media) fails at the first attempt and says what to do, exit 1,
// as a full disk is for save; a retry would only fill it again. Other
// failures are retried. A full file system cannot be had on demand without
// privileges: the error is the one containers/image returns.
func TestRetryFull(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		tries int
		says  string
	}{
		{"no space", &fs.PathError{Op: "write", Path: "/media/usb/layout/oci-put-blob1", Err: unix.ENOSPC}, 1, "the file system is full"},
		{"over quota", &fs.PathError{Op: "write", Path: "/media/usb/layout/oci-put-blob1", Err: unix.EDQUOT}, 1, "the file system is full"},
		{"reset", io.ErrUnexpectedEOF, attempts, io.ErrUnexpectedEOF.Error()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tries := 0
			err := retry(t.Context(), time.Microsecond, slog.New(slog.DiscardHandler), "send x", func() error {
				tries++
				return c.err
			})
			if tries != c.tries || !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.says) || exitcode.Of(err) != exitcode.Failure {
				t.Errorf("retry of %v: %d tries, %v (exit %d); want %d tries, %q, exit %d", c.err, tries, err, exitcode.Of(err), c.tries, c.says, exitcode.Failure)
			}
		})
	}
}
