package destination

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// TestNoRoom: a download into a full file system says how much room the
// backup needs there, keeps exit 1 and its cause; other errors pass
// unchanged.
func TestNoRoom(t *testing.T) {
	dir := t.TempDir()
	part := filepath.Join(dir, "snapshot_2026-12-04_000000.db.part")
	tests := []struct {
		name string
		err  error
		says string
	}{
		{"no space", &fs.PathError{Op: "write", Path: part, Err: unix.ENOSPC}, "the backup needs about 6.6 MiB in " + dir + ": free space there"},
		{"over quota", &fs.PathError{Op: "write", Path: part, Err: unix.EDQUOT}, "download into a directory with room"},
		{"other", &fs.PathError{Op: "write", Path: part, Err: unix.EIO}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := noRoom(tt.err, dir, 6920000)
			if tt.says == "" && err != tt.err || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("%v, want it to say %q", err, tt.says)
			}
			if exitcode.Of(err) != exitcode.Failure || !errors.Is(err, tt.err) {
				t.Errorf("%v: exit %d, want exit %d wrapping its cause", err, exitcode.Of(err), exitcode.Failure)
			}
		})
	}
}
