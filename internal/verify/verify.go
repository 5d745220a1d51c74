// Package verify checks a backup end to end against its backup.json: every
// file's size, SHA-256 and CRC32C, the snapshot's own SHA-256 trailer, the
// archive's restore layout, the snapshot's bbolt structure and, on request,
// a trial restore with etcd's own restore code.
package verify

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/archive"
	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/snapshot"
	"github.com/etcd-backup/etcd-backup/internal/staticpod"
)

// Options configure Dir.
type Options struct {
	// Restore adds a trial restore of the snapshot into a scratch directory.
	Restore bool
	// ScratchDir holds the trial restore; empty means the system default.
	ScratchDir string
	// ScratchHeld is what the caller keeps in ScratchDir beside the trial
	// restore (a backup it downloaded there), told in the room it needs.
	ScratchHeld int64
	Log         *slog.Logger
}

// failed marks err as a verification failure (exit 4).
func failed(format string, a ...any) error {
	return exitcode.With(exitcode.Verify, fmt.Errorf(format, a...))
}

// Manifest reads and validates dir/backup.json.
func Manifest(dir string) (*manifest.Backup, error) {
	f, err := os.Open(filepath.Join(dir, manifest.FileName))
	if errors.Is(err, fs.ErrNotExist) {
		if inside := backupsIn(dir); len(inside) > 0 {
			return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s has no %s, but directories in it do: give one of them, e.g. %s", dir, manifest.FileName, strings.Join(inside, ", ")))
		}
		return nil, failed("%s has no %s: not a complete backup%s", dir, manifest.FileName, unrecorded(dir))
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := manifest.Parse(f)
	if errors.Is(err, manifest.ErrInvalid) {
		return nil, exitcode.With(exitcode.Verify, fmt.Errorf("%s: %w", dir, err))
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Dir verifies the backup in dir and returns its manifest.
func Dir(ctx context.Context, dir string, opts Options) (*manifest.Backup, error) {
	b, err := Listing(dir)
	if err != nil {
		return nil, err
	}
	for _, f := range b.Files {
		if err := localFile(ctx, dir, b, f); err != nil {
			return nil, err
		}
		opts.Log.Info("verified "+f.Name, "sha256", f.SHA256, "size", f.Size)
		warnExposed(opts.Log, filepath.Join(dir, f.Name), f)
	}
	snap := filepath.Join(dir, b.File(manifest.KindSnapshot).Name)
	if err := Snapshot(ctx, snap, b); err != nil {
		return nil, err
	}
	if opts.Restore {
		if err := trialRestore(ctx, snap, b, opts); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Snapshot checks the structure of the snapshot file at path, the snapshot
// of b, and that it holds the revision and key count b records. A corrupt
// database is a verification failure (exit 4); no content can crash the
// check (snapshot.Check).
func Snapshot(ctx context.Context, path string, b *manifest.Backup) error {
	st, err := snapshot.Check(ctx, path)
	if errors.Is(err, snapshot.ErrCorrupt) {
		return exitcode.With(exitcode.Verify, err)
	}
	if err != nil {
		return err
	}
	return sameContent(b, st, "snapshot")
}

// maxNamed bounds how many backups backupsIn names.
const maxNamed = 3

// backupsIn returns up to maxNamed directories in dir, the last by name
// first, that hold a backup.json: dir is then where backups are kept (a
// volume), given for one of them. None when dir holds a snapshot itself.
func backupsIn(dir string) []string {
	if snaps, _ := filepath.Glob(filepath.Join(dir, "snapshot_*.db")); len(snaps) > 0 {
		return nil
	}
	entries, _ := os.ReadDir(dir)
	var found []string
	for _, e := range slices.Backward(entries) {
		path := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(path, manifest.FileName)); e.IsDir() && err == nil {
			found = append(found, path)
		}
		if len(found) == maxNamed {
			break
		}
	}
	return found
}

// unrecorded says, of a directory without backup.json that holds a
// snapshot, what it may be: the record is what every check compares with.
func unrecorded(dir string) string {
	snaps, _ := filepath.Glob(filepath.Join(dir, "snapshot_*.db"))
	if len(snaps) == 0 {
		return ""
	}
	return fmt.Sprintf("; it holds %s with no record to check it against: a save cut short before its last step, or a backup taken by cluster-backup.sh; take a backup with etcd-backup save", filepath.Base(snaps[0]))
}

// onlyThisBackup refuses a directory where restore globs would match more
// than the files backup.json lists.
func onlyThisBackup(dir string, b *manifest.Backup) error {
	listed := map[string]bool{}
	for _, f := range b.Files {
		listed[f.Name] = true
	}
	for _, pattern := range []string{"snapshot_*.db", "static_kuberesources_*.tar.gz"} {
		matches, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if !listed[filepath.Base(m)] {
				return failed("%s holds %s, which %s does not list: cluster-restore.sh would not know which snapshot to use", dir, filepath.Base(m), manifest.FileName)
			}
		}
	}
	return nil
}

// Listing checks what dir holds against its backup.json without reading
// the data files, and returns the manifest: every file it lists is there
// with the size it records, and nothing else restore would pick up.
// Content is for Stream, or NewReader as it is sent elsewhere.
func Listing(dir string) (*manifest.Backup, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		if _, err := os.Stat(filepath.Join(filepath.Dir(dir), manifest.FileName)); fi != nil && err == nil {
			return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s is not a backup directory but a file of one: give %s", dir, filepath.Dir(dir)))
		}
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s is not a backup directory", dir))
	}
	b, err := Manifest(dir)
	if err != nil {
		return nil, err
	}
	if err := onlyThisBackup(dir, b); err != nil {
		return nil, err
	}
	for _, f := range b.Files {
		if err := listedFile(filepath.Join(dir, f.Name), f); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func listedFile(path string, want manifest.File) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return failed("%s is missing", path)
	}
	if err != nil {
		return err
	}
	if fi.Size() != want.Size {
		return failed("%s is %d bytes, %s says %d", path, fi.Size(), manifest.FileName, want.Size)
	}
	return nil
}

// warnExposed warns when the file at path lets more users read it than
// the mode save gave it. The mode is not the backup: copies change it
// (oras, skopeo, FAT and exFAT media, which keep none) and restore reads the
// file as it is, so it never fails the check.
func warnExposed(log *slog.Logger, path string, f manifest.File) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	want, _ := strconv.ParseUint(f.Mode, 8, 32) // octal: manifest.Parse checked it
	if got := fi.Mode().Perm(); got&^fs.FileMode(want)&0o044 != 0 {
		log.Warn(fmt.Sprintf("%s can be read by other users (mode %04o, saved %s), and a backup holds every Secret of the cluster: chmod 600 it, or keep media that hold no modes (FAT, exFAT) under lock", path, got, f.Mode))
	}
}

func localFile(ctx context.Context, dir string, b *manifest.Backup, want manifest.File) error {
	path := filepath.Join(dir, want.Name)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	want.Name = path // as the verdict names it
	return Stream(ctx, f, b, want)
}

// Stream checks one file of b read from r: its size, SHA-256 and CRC32C
// against want, plus the snapshot trailer or the archive layout. It reads r
// once, to the end, and is what remote verification runs over a download.
func Stream(ctx context.Context, r io.Reader, b *manifest.Backup, want manifest.File) error {
	var err error
	switch want.Kind {
	case manifest.KindSnapshot:
		err = snapshotStream(r, want)
	case manifest.KindResources:
		err = archiveStream(r, b, want)
	default:
		return failed("%s has unknown kind %q", want.Name, want.Kind)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		// What failed was reading, cut short.
		return context.Cause(ctx)
	}
	return err
}

// snapshotStream takes the file's digests from the pass that checks the
// trailer, so that a snapshot is hashed once.
func snapshotStream(r io.Reader, want manifest.File) error {
	d, err := snapshot.Copy(io.Discard, r)
	return snapshotVerdict(want, d, err)
}

// snapshotVerdict judges want by what reading it to its end found: d, or
// err.
func snapshotVerdict(want manifest.File, d snapshot.Digest, err error) error {
	switch {
	case errors.Is(err, snapshot.ErrNoTrailer), errors.Is(err, snapshot.ErrTrailerMismatch):
		return failed("%s: %w", want.Name, err)
	case err != nil:
		return fmt.Errorf("read %s: %w", want.Name, err)
	}
	if err := want.Match(d.Size, hex.EncodeToString(d.SHA256[:]), d.CRC32C); err != nil {
		return exitcode.With(exitcode.Verify, err)
	}
	return nil
}

func archiveStream(r io.Reader, b *manifest.Backup, want manifest.File) error {
	src := exitcode.NewSource(r)
	digest := manifest.NewDigest()
	tee := io.TeeReader(src, digest)
	if _, err := archive.Check(tee, revisionDirs(b)); err != nil {
		if src.Err() != nil {
			// The stream failed, not the archive (a connection reset);
			// its error says which, and what it is worth.
			return fmt.Errorf("read %s: %w", want.Name, src.Err())
		}
		return failed("%s: %w", want.Name, err)
	}
	// The layout check may stop at the end of the tar stream; the
	// checksums cover every byte.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("read %s: %w", want.Name, err)
	}
	if err := digest.Check(want); err != nil {
		return exitcode.With(exitcode.Verify, err)
	}
	return nil
}

// revisionDirs returns the top-level directories the archive of b holds: the
// static pod revisions it lists, or kubeadm's directories where it lists none.
func revisionDirs(b *manifest.Backup) []string {
	revs := make([]staticpod.Revision, len(b.StaticPods))
	for i, p := range b.StaticPods {
		revs[i] = staticpod.Revision{Component: p.Component, Revision: p.Revision, Dir: staticpod.RevisionDir(p.Component, p.Revision)}
	}
	return archive.Dirs(revs)
}

func sameContent(b *manifest.Backup, st snapshot.Status, what string) error {
	if st.Revision != b.Etcd.Revision || st.KeyCount != b.Etcd.KeyCount {
		return failed("%s holds revision %d with %d keys, %s says revision %d with %d keys", what, st.Revision, st.KeyCount, manifest.FileName, b.Etcd.Revision, b.Etcd.KeyCount)
	}
	return nil
}

// restoreError tells a trial restore into scratchDir that failed for want
// of room there (ScratchFull) from one that failed on the snapshot (exit 4).
// Restore names the snapshot.
func restoreError(err error, b *manifest.Backup, scratchDir string, held int64) error {
	switch {
	case atomicfile.NoRoom(err):
		return ScratchFull(err, b, scratchDir, held)
	case errors.Is(err, unix.EFBIG):
		return atomicfile.TooLarge(err)
	}
	return exitcode.With(exitcode.Verify, err)
}

// ScratchFull tells err, when the file system of scratchDir ran out of
// space or quota, as what it is: a trial restore of b short of room, which
// says nothing about the backup. held is what the caller keeps there
// beside the restore. It returns err as it is otherwise.
func ScratchFull(err error, b *manifest.Backup, scratchDir string, held int64) error {
	if !atomicfile.NoRoom(err) {
		return err
	}
	// etcd allocates the first segment of its write-ahead log whole.
	const walSegment = 64 << 20
	what := "the database, and 64 MiB for etcd's log"
	if held > 0 {
		what = "the backup downloaded there, its database restored, and 64 MiB for etcd's log"
	}
	need := held + b.File(manifest.KindSnapshot).Size + walSegment
	return fmt.Errorf("%w: the trial restore needs about %s in %s (%s), which says nothing about the backup: free space there, or give --scratch-dir on a file system with room", err, progress.Bytes(need), scratchDir, what)
}

func trialRestore(ctx context.Context, snap string, b *manifest.Backup, opts Options) error {
	scratch, err := os.MkdirTemp(opts.ScratchDir, "etcd-backup-restore-*")
	if err != nil {
		return fmt.Errorf("create scratch directory for the trial restore: %w", err)
	}
	defer os.RemoveAll(scratch)
	opts.Log.Info("trial restore of "+filepath.Base(snap), "into", scratch)
	st, err := snapshot.Restore(ctx, snap, filepath.Join(scratch, "member-data"))
	switch {
	case err != nil && ctx.Err() != nil:
		return err
	case err != nil:
		return restoreError(err, b, filepath.Dir(scratch), opts.ScratchHeld)
	}
	if err := sameContent(b, st, "restored member"); err != nil {
		return err
	}
	opts.Log.Info("trial restore succeeded", "revision", st.Revision, "keys", st.KeyCount)
	return nil
}
