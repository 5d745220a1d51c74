package verify

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// TestRestoreError: a trial restore that ran out of room in its scratch
// directory says so and is not exit 4, which would call a good backup
// unusable; one that failed on the snapshot is.
func TestRestoreError(t *testing.T) {
	snap := filepath.Join(t.TempDir(), "snapshot_2026-12-04_000000.db")
	db := filepath.Join(t.TempDir(), "member", "snap", "db")
	tests := []struct {
		name string
		err  error
		code int
		says string
	}{
		{"no space", &fs.PathError{Op: "write", Path: db, Err: unix.ENOSPC}, exitcode.Failure, "says nothing about the backup"},
		{"over quota", &fs.PathError{Op: "write", Path: db, Err: unix.EDQUOT}, exitcode.Failure, "--scratch-dir"},
		{"too large", &fs.PathError{Op: "write", Path: db, Err: unix.EFBIG}, exitcode.Usage, "cannot hold a file this large"},
		{"snapshot", errors.New("etcd restore gave up: invalid database"), exitcode.Verify, "invalid database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := restoreError(fmt.Errorf("trial restore of %s: %w", snap, tt.err), snap, t.TempDir())
			if exitcode.Of(err) != tt.code || !strings.Contains(err.Error(), tt.says) || !errors.Is(err, tt.err) {
				t.Errorf("%v (exit %d), want exit %d saying %q", err, exitcode.Of(err), tt.code, tt.says)
			}
		})
	}
}
