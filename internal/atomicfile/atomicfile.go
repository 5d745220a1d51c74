// Package atomicfile writes files that appear under their final name only
// once complete and durable: data goes to "<name>.part", is fsynced, and is
// renamed into place, then the directory is fsynced.
//
// A crash or error at any point leaves at most a ".part" file, which Abort
// removes; a reader globbing the final names never sees a partial file.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// PartSuffix marks a file that is still being written.
const PartSuffix = ".part"

// Mode is the permission of every file this package creates.
const Mode fs.FileMode = 0o600

// writebackChunk is how much data may pile up in the page cache before
// writeback of it is started. Large files are written sequentially and
// fsynced at the end; without this the kernel may defer all writeback to
// that fsync, which then waits for the whole file at once.
const writebackChunk = 8 << 20

// File is a file being written under a temporary name.
type File struct {
	*os.File
	final string
	done  bool
	// link is os.Link; tests replace it to stand for a file system
	// without hard links.
	link func(oldname, newname string) error

	written, flushed int64 // bytes written; bytes whose writeback was started
}

// Create starts writing dir/name. It fails if either the final name or its
// ".part" already exists, so nothing existing is ever replaced.
func Create(dir, name string) (*File, error) {
	final := filepath.Join(dir, name)
	if _, err := os.Lstat(final); err == nil {
		return nil, fmt.Errorf("create %s: %w", final, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(final+PartSuffix, os.O_WRONLY|os.O_CREATE|os.O_EXCL, Mode)
	if err != nil {
		return nil, err
	}
	return &File{File: f, final: final, link: os.Link}, nil
}

// Write writes p and starts asynchronous writeback of each full chunk, so
// that the disk works while the stream is still arriving.
func (f *File) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	err = TooLarge(err)
	f.written += int64(n)
	if f.written-f.flushed >= writebackChunk {
		// Best effort: a filesystem without sync_file_range still gets
		// everything on disk from the fsync in Sync or Commit.
		unix.SyncFileRange(int(f.Fd()), f.flushed, f.written-f.flushed, unix.SYNC_FILE_RANGE_WRITE)
		f.flushed = f.written
	}
	return n, err
}

// PartPath is where the data is being written.
func (f *File) PartPath() string { return f.final + PartSuffix }

// FinalPath is where the file appears after Commit.
func (f *File) FinalPath() string { return f.final }

// Sync flushes the data to stable storage. Commit syncs too; calling Sync
// first lets the caller check the file at PartPath before committing it.
func (f *File) Sync() error {
	if err := f.File.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.PartPath(), err)
	}
	return nil
}

// Commit makes the file durable under its final name. On error the ".part"
// file is removed.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("commit %s: already closed", f.final)
	}
	f.done = true
	if err := f.commit(); err != nil {
		os.Remove(f.PartPath())
		return err
	}
	return nil
}

func (f *File) commit() error {
	syncErr := f.File.Sync()
	closeErr := f.File.Close()
	if err := errors.Join(syncErr, closeErr); err != nil {
		return fmt.Errorf("write %s: %w", f.PartPath(), err)
	}
	if err := f.place(); err != nil {
		return fmt.Errorf("commit %s: %w", f.final, err)
	}
	return SyncDir(filepath.Dir(f.final))
}

// place gives the written file its final name. Link, not rename: link
// fails if the final name appeared meanwhile, where rename would silently
// replace it. FAT and exFAT, as removable media come formatted, have no
// hard links: there the name is looked at and then taken by a rename, and
// only a writer in the same instant could slip between the two.
func (f *File) place() error {
	err := f.link(f.PartPath(), f.final)
	if noHardLinks(err) {
		if _, err := os.Lstat(f.final); err == nil {
			return fs.ErrExist
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return os.Rename(f.PartPath(), f.final)
	}
	if err != nil {
		return err
	}
	if err := os.Remove(f.PartPath()); err != nil {
		os.Remove(f.final)
		return err
	}
	return nil
}

// noHardLinks reports whether err is a file system refusing hard links
// altogether: EPERM from vfat and exfat, which have no link operation, and
// what FUSE and network file systems say for the same.
func noHardLinks(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOSYS)
}

// Abort discards the file; after Commit it does nothing. It is safe to defer.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.PartPath())
}

// WriteFile writes data to dir/name through Create and Commit.
func WriteFile(dir, name string, data []byte) error {
	f, err := Create(dir, name)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}

// SyncDir fsyncs a directory so that entries created or renamed in it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// Replace writes data to path with the given mode, replacing what is there:
// for files that are rewritten on every run, such as a metrics file a
// collector reads at any time. Readers see the old content or the new,
// never a part. The temporary name ends in PartSuffix.
func Replace(path string, data []byte, mode fs.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*"+PartSuffix)
	if err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return SyncDir(dir)
}

// fatMaxSize is the largest file FAT holds: USB sticks up to 32 GB come
// formatted FAT32, and a snapshot can be larger.
const fatMaxSize = 1<<32 - 1

// Writable proves that dir takes new files from this process, by creating
// one and removing it: permission bits, ACLs, a read-only mount and
// security policies all have their say, as they will when the work is done.
func Writable(dir string) error {
	probe, err := os.CreateTemp(dir, ".etcd-backup-probe-*")
	if err != nil {
		return err
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// toFix is what to do about a file system that cannot hold a file.
const toFix = "use a file system formatted exFAT, ext4 or XFS"

// Fits checks, before anything is written, that the file system holding
// dir can hold name, a file of size bytes, where the kind of file system
// says it cannot (FAT). Other limits show as the write fails (TooLarge).
func Fits(dir, name string, size int64) error {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || int64(st.Type) != unix.MSDOS_SUPER_MAGIC || size <= fatMaxSize {
		return nil
	}
	return exitcode.With(exitcode.Usage, fmt.Errorf("%s is on a FAT file system, which holds files of at most 4 GiB less one byte, and %s is %d bytes: %s", dir, name, size, toFix))
}

// NoRoom reports whether err is a file system out of space or quota.
func NoRoom(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// TooLarge says what to do about err when it is a file system refusing a
// file for its size (EFBIG), a configuration no retry cures (exit 2), and
// returns err as it is otherwise.
func TooLarge(err error) error {
	if !errors.Is(err, unix.EFBIG) {
		return err
	}
	return exitcode.With(exitcode.Usage, fmt.Errorf("%w: the file system cannot hold a file this large (FAT holds at most 4 GiB less one byte): %s", err, toFix))
}
