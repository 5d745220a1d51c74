package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

// Download fetches the backup at ref into dir, which must be new or empty,
// laid out as the local backup was: the files backup.json lists, 0600, and
// backup.json itself as save wrote it, so that cluster-restore.sh and
// 'verify DIR' accept the directory as it is.
//
// Each file is written as "<name>.part" and checked while it streams (size,
// SHA-256, CRC32C, the snapshot's trailer, the archive's layout), and the
// snapshot's structure once it is whole, before it takes its name. A backup that is incomplete or corrupt is refused (exit 4)
// and, as on any failure, nothing is left in dir; a dir it created is removed.
func (c *Client) Download(ctx context.Context, ref Ref, dir string) (_ *manifest.Backup, err error) {
	b, _, err := c.readManifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	created, err := prepareDir(dir)
	if err != nil {
		return nil, err
	}
	var committed []string
	defer func() {
		if err == nil {
			return
		}
		for _, p := range committed {
			os.Remove(p)
		}
		if created {
			os.Remove(dir)
		} else {
			atomicfile.SyncDir(dir)
		}
	}()
	for _, f := range b.Files {
		path, err := c.fetch(ctx, ref, b, f, dir)
		if err != nil {
			return nil, err
		}
		committed = append(committed, path)
	}
	local := *b
	local.Locations = nil
	data, err := manifest.Marshal(&local)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(dir, manifest.FileName, data); err != nil {
		return nil, err
	}
	c.Log.Info("backup downloaded", "backup", ref.String(), "dir", dir)
	return b, nil
}

// prepareDir creates dir, or checks that it is an empty directory.
func prepareDir(dir string) (created bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, usage(fmt.Errorf("create download directory: %w", err))
		}
		return true, nil
	case err != nil:
		return false, usage(fmt.Errorf("download directory: %w", err))
	case len(entries) > 0:
		return false, usage(fmt.Errorf("download directory %s is not empty: give a new or empty directory", dir))
	}
	return false, nil
}

// fetch downloads file f into dir, checked before it is committed, and
// returns its path.
func (c *Client) fetch(ctx context.Context, ref Ref, b *manifest.Backup, f manifest.File, dir string) (string, error) {
	loc, err := c.locate(ref, b, f)
	if err != nil {
		return "", err
	}
	part, err := atomicfile.Create(dir, f.Name)
	if err != nil {
		return "", err
	}
	defer part.Abort()
	out := &errWriter{w: part}
	if err := c.check(ctx, loc, b, f, out); err != nil {
		return "", err
	}
	// The structure check needs the whole file, before it takes its name.
	if f.Kind == manifest.KindSnapshot {
		if err := verify.Snapshot(ctx, part.PartPath(), b); err != nil {
			return "", fmt.Errorf("%s: %w", loc.url, err)
		}
	}
	if err := part.Commit(); err != nil {
		return "", err
	}
	return part.FinalPath(), nil
}

// check streams the object at loc through verify.Stream, copying it to w.
func (c *Client) check(ctx context.Context, loc location, b *manifest.Backup, f manifest.File, w *errWriter) error {
	r, err := loc.store.Open(ctx, loc.url.Path)
	if err != nil {
		if errors.Is(err, store.ErrNotExist) {
			return failed("%s is missing: the backup is incomplete", loc.url)
		}
		return err
	}
	defer r.Close()
	m := progress.Start(ctx, c.Log, "reading "+loc.url.String(), f.Size, c.ProgressInterval)
	defer m.Stop()
	err = verify.Stream(ctx, io.TeeReader(r, io.MultiWriter(m, w)), b, f)
	switch {
	case w.err != nil:
		// The local disk failed, not the backup.
		return w.err
	case errors.Is(err, store.ErrCorrupt):
		// The store names the object already.
		return failed("%w", err)
	case exitcode.Of(err) == exitcode.Verify:
		// The check names the file; the backup is what it lacks.
		return failed("%s: %w", store.URL{Bucket: loc.url.Bucket, Path: path.Dir(loc.url.Path)}, err)
	case err != nil:
		return err
	}
	return nil
}

// errWriter keeps the first write error, so that a failing local disk is
// not reported as a corrupt backup; nil w discards.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.w == nil {
		return len(p), nil
	}
	n, err := e.w.Write(p)
	if err != nil {
		e.err = fmt.Errorf("write download: %w", err)
	}
	return n, err
}

// Verify checks the backup at ref where it is stored: each file streamed
// through the same checks as a download. With opts.Restore it downloads the
// backup into a scratch directory and verifies that with a trial restore.
func (c *Client) Verify(ctx context.Context, ref Ref, opts verify.Options) (*manifest.Backup, error) {
	if opts.Restore {
		return c.verifyRestore(ctx, ref, opts)
	}
	b, _, err := c.readManifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	for _, f := range b.Files {
		loc, err := c.locate(ref, b, f)
		if err != nil {
			return nil, err
		}
		if err := c.check(ctx, loc, b, f, &errWriter{}); err != nil {
			return nil, err
		}
		c.Log.Info("verified "+loc.url.String(), "sha256", f.SHA256, "size", f.Size)
	}
	return b, nil
}

func (c *Client) verifyRestore(ctx context.Context, ref Ref, opts verify.Options) (*manifest.Backup, error) {
	scratch, err := os.MkdirTemp(opts.ScratchDir, "etcd-backup-download-*")
	if err != nil {
		return nil, fmt.Errorf("create scratch directory for the download: %w", err)
	}
	defer os.RemoveAll(scratch)
	dir := filepath.Join(scratch, "backup")
	if _, err := c.Download(ctx, ref, dir); err != nil {
		return nil, err
	}
	return verify.Dir(ctx, dir, opts)
}
