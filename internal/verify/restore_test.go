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
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// TestRestoreError: a trial restore that ran out of room in its scratch
// directory says so, with the room it needs there, and is not exit 4, which
// would call a good backup unusable; one that failed on the snapshot is.
func TestRestoreError(t *testing.T) {
	snap := filepath.Join(t.TempDir(), "snapshot_2026-12-04_000000.db")
	db := filepath.Join(t.TempDir(), "member", "snap", "db")
	b := &manifest.Backup{Files: []manifest.File{{Name: filepath.Base(snap), Kind: manifest.KindSnapshot, Size: 1 << 30}}}
	tests := []struct {
		name string
		err  error
		held int64
		code int
		says string
	}{
		{"no space", &fs.PathError{Op: "write", Path: db, Err: unix.ENOSPC}, 0, exitcode.Failure, "needs about 1.1 GiB in"},
		{"over quota", &fs.PathError{Op: "write", Path: db, Err: unix.EDQUOT}, 0, exitcode.Failure, "says nothing about the backup: free space there, or give --scratch-dir"},
		{"no space beside a download", &fs.PathError{Op: "write", Path: db, Err: unix.ENOSPC}, 1<<30 + 4<<20, exitcode.Failure, "needs about 2.1 GiB in"},
		{"too large", &fs.PathError{Op: "write", Path: db, Err: unix.EFBIG}, 0, exitcode.Usage, "cannot hold a file this large"},
		{"snapshot", errors.New("etcd restore gave up: invalid database"), 0, exitcode.Verify, "invalid database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := restoreError(fmt.Errorf("trial restore of %s: %w", snap, tt.err), b, t.TempDir(), tt.held)
			if exitcode.Of(err) != tt.code || !strings.Contains(err.Error(), tt.says) || !errors.Is(err, tt.err) {
				t.Errorf("%v (exit %d), want exit %d saying %q", err, exitcode.Of(err), tt.code, tt.says)
			}
		})
	}
}
