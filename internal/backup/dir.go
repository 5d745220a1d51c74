package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// backupDir is a backup directory locked for this run.
type backupDir struct {
	path string
	f    *os.File
}

// openDir creates dir if needed (as cluster-backup.sh does, parents too) and
// takes an exclusive lock on it, so that two runs can never fill one
// directory. It refuses a directory that already holds a backup or a
// leftover of one: cluster-restore.sh pairs files by glob, and two snapshots
// in one directory make a restore ambiguous.
func openDir(dir string) (*backupDir, error) {
	if dir == "" {
		return nil, exitcode.With(exitcode.Usage, errors.New("no backup directory given"))
	}
	fi, err := os.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("backup directory %s is a file; give a directory", dir))
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, exitcode.With(exitcode.Usage, fmt.Errorf("create backup directory: %w", err))
		}
	case err != nil:
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("backup directory: %w", err))
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("open backup directory: %w", err))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("backup directory %s is in use by another run: %w", dir, err))
	}
	d := &backupDir{path: dir, f: f}
	if err := d.checkEmptyOfBackups(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.checkWritable(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *backupDir) checkEmptyOfBackups() error {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return exitcode.With(exitcode.Usage, fmt.Errorf("read backup directory: %w", err))
	}
	var parts []string
	for _, e := range entries {
		switch name := e.Name(); {
		case strings.HasSuffix(name, atomicfile.PartSuffix):
			parts = append(parts, shellQuote(d.join(name)))
		case isBackupFile(name):
			return exitcode.With(exitcode.Usage, fmt.Errorf("backup directory %s already holds %s: give each backup a new or empty directory", d.path, name))
		}
	}
	if len(parts) > 0 {
		return exitcode.With(exitcode.Usage, fmt.Errorf("backup directory %s holds a leftover of an interrupted run, which is not a backup: remove it with: rm -- %s", d.path, strings.Join(parts, " ")))
	}
	return nil
}

// shellQuote quotes s for a POSIX shell, so that the command in a message
// can be pasted whatever the path holds.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func isBackupFile(name string) bool {
	return name == manifest.FileName ||
		(strings.HasPrefix(name, "snapshot_") && strings.HasSuffix(name, ".db")) ||
		(strings.HasPrefix(name, "static_kuberesources_") && strings.HasSuffix(name, ".tar.gz"))
}

// checkWritable proves the directory takes new files before etcd is asked
// for anything, so a read-only mount fails fast with a usage error.
func (d *backupDir) checkWritable() error {
	if err := atomicfile.Writable(d.path); err != nil {
		return exitcode.With(exitcode.Usage, fmt.Errorf("backup directory %s is not writable: %w", d.path, err))
	}
	return nil
}

// free returns the bytes available to this process in the directory.
func (d *backupDir) free() (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(d.f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", d.path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func (d *backupDir) join(name string) string { return filepath.Join(d.path, name) }

// Close releases the lock.
func (d *backupDir) Close() error { return d.f.Close() }
