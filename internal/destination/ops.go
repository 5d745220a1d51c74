package destination

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

// UploadDir stores the backup in dir. Each file is checked against
// backup.json as it is sent; a file that fails the check fails the upload
// and nothing is committed.
func UploadDir(ctx context.Context, d Dest, dir string) (Result, error) {
	b, err := verify.Listing(dir)
	if err != nil {
		return Result{}, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, manifest.FileName))
	if err != nil {
		return Result{}, fmt.Errorf("read %s: %w", manifest.FileName, err)
	}
	up, err := d.Begin(ctx, b, raw)
	if err != nil {
		return Result{}, err
	}
	defer up.Close()
	for _, f := range b.Files {
		open := func() (io.ReadCloser, error) {
			file, err := os.Open(filepath.Join(dir, f.Name))
			if err != nil {
				return nil, err
			}
			return readCloser{verify.NewReader(ctx, file, b, f), file}, nil
		}
		if _, err := up.Put(ctx, f, open); err != nil {
			return Result{}, err
		}
	}
	return up.Commit(ctx)
}

// readCloser closes the check and then the file under it.
type readCloser struct {
	*verify.Reader
	file *os.File
}

func (r readCloser) Close() error {
	r.Reader.Close()
	return r.file.Close()
}

// Download writes the stored backup name into dir as save wrote it, each
// file checked as it streams and backup.json last. A file that fails its
// check is removed and the error is a verification failure.
func Download(ctx context.Context, d Dest, name, dir string) (*manifest.Backup, error) {
	s, err := d.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	b := s.Manifest()
	for _, f := range b.Files {
		if err := downloadFile(ctx, s, b, f, filepath.Join(dir, f.Name)); err != nil {
			return nil, err
		}
	}
	path := filepath.Join(dir, manifest.FileName)
	if err := os.WriteFile(path, s.Raw(), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return b, nil
}

func downloadFile(ctx context.Context, s Stored, b *manifest.Backup, f manifest.File, path string) (err error) {
	r, err := s.Open(ctx, f)
	if err != nil {
		return err
	}
	defer r.Close()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	check := verify.NewReader(ctx, r, b, f)
	defer check.Close()
	if _, err := io.Copy(out, check); err != nil {
		return err
	}
	mode, err := strconv.ParseUint(f.Mode, 8, 32)
	if err != nil {
		return exitcode.With(exitcode.Verify, fmt.Errorf("%s: mode %q: %w", f.Name, f.Mode, err))
	}
	return out.Chmod(os.FileMode(mode))
}

// Verify checks every file of the stored backup name as it streams.
func Verify(ctx context.Context, d Dest, name string) (*manifest.Backup, error) {
	s, err := d.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b := s.Manifest()
	for _, f := range b.Files {
		r, err := s.Open(ctx, f)
		if err != nil {
			return nil, err
		}
		err = verify.Stream(ctx, r, b, f)
		r.Close()
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// ErrNoBackup is returned by Latest when the destination holds no complete
// backup.
var ErrNoBackup = errors.New("no complete backup")

// Latest returns the newest complete backup of cluster (any cluster when
// empty).
func Latest(ctx context.Context, d Dest, cluster string) (Entry, error) {
	entries, err := d.List(ctx)
	if err != nil {
		return Entry{}, err
	}
	var best *Entry
	for i, e := range entries {
		if e.State != Complete || (cluster != "" && e.ClusterID != cluster) {
			continue
		}
		if best == nil || newer(e, *best) {
			best = &entries[i]
		}
	}
	if best == nil {
		return Entry{}, fmt.Errorf("%s holds %w", d.URL(), ErrNoBackup)
	}
	return *best, nil
}

func newer(a, b Entry) bool { return Compare(a, b) > 0 }

// Compare orders entries oldest first: by <ts>, then creation time, then name.
func Compare(a, b Entry) int {
	return cmp.Or(cmp.Compare(a.Timestamp, b.Timestamp), a.Created.Compare(b.Created), cmp.Compare(a.Name, b.Name))
}

// Prune deletes the complete backups this tool wrote beyond the newest
// keep of each cluster (at least one is always kept), and returns what it
// deleted (with dryRun, what it would delete). Anything incomplete, corrupt
// or written by something else is left alone and does not count.
func Prune(ctx context.Context, d Dest, keep int, dryRun bool) ([]Entry, error) {
	entries, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	keep = max(keep, 1)
	byCluster := map[string][]Entry{}
	for _, e := range entries {
		if e.Ours && e.State == Complete {
			byCluster[e.ClusterID] = append(byCluster[e.ClusterID], e)
		}
	}
	var doomed []Entry
	for _, es := range byCluster {
		slices.SortFunc(es, func(a, b Entry) int { return Compare(b, a) })
		if len(es) > keep {
			doomed = append(doomed, es[keep:]...)
		}
	}
	slices.SortFunc(doomed, func(a, b Entry) int { return cmp.Compare(a.Name, b.Name) })
	if dryRun {
		return doomed, nil
	}
	for i, e := range doomed {
		if err := d.Delete(ctx, e.Name); err != nil {
			return doomed[:i], err
		}
	}
	return doomed, nil
}
