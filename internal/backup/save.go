// Package backup takes one backup of the local etcd member: discovery,
// preflight, the snapshot and the static pod resources archive written side
// by side, verification, then commit and backup.json. It is the replacement
// for OpenShift's cluster-backup.sh.
package backup

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/etcd-backup/etcd-backup/internal/archive"
	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/member"
	"github.com/etcd-backup/etcd-backup/internal/preflight"
	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/snapshot"
	"github.com/etcd-backup/etcd-backup/internal/version"
)

// Options configure Save.
type Options struct {
	Dir      string
	HostRoot string
	NodeName string
	// Endpoint, CACert, Cert and Key override what discovery finds in
	// etcd.env. Paths are as this process sees them (not under HostRoot).
	Endpoint, CACert, Cert, Key string
	// Force skips the preflight checks and marks the backup dirty.
	Force          bool
	MinClusterAge  time.Duration
	RequestTimeout time.Duration
	// WaitForVersion, when set, waits until the ClusterVersion has completed
	// the update to this version and nothing is progressing, for at most
	// WaitTimeout, polling every PollInterval.
	WaitForVersion string
	WaitTimeout    time.Duration
	PollInterval   time.Duration
	// ProgressInterval is how often the snapshot transfer logs progress.
	ProgressInterval time.Duration
	// StallTimeout abandons a snapshot stream that delivers no data for
	// this long: a hung member must fail the step, not hold it until the
	// pipeline's own deadline.
	StallTimeout time.Duration
	Log          *slog.Logger
	// Now is the clock; tests pin it.
	Now func() time.Time
}

// Defaults for zero Options fields; the command line shows the same.
const (
	DefaultMinClusterAge    = 24 * time.Hour
	DefaultRequestTimeout   = 15 * time.Second
	DefaultWaitTimeout      = 45 * time.Minute
	DefaultPollInterval     = 30 * time.Second
	DefaultProgressInterval = 5 * time.Second
	DefaultStallTimeout     = time.Minute
)

func (o Options) withDefaults() Options {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&o.RequestTimeout, DefaultRequestTimeout)
	set(&o.WaitTimeout, DefaultWaitTimeout)
	set(&o.PollInterval, DefaultPollInterval)
	set(&o.ProgressInterval, DefaultProgressInterval)
	set(&o.StallTimeout, DefaultStallTimeout)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Result is a finished backup.
type Result struct {
	Dir           string
	SnapshotPath  string
	ResourcesPath string
	Manifest      *manifest.Backup
}

// Save takes one backup into opts.Dir. On any failure, and on cancellation,
// it removes every file it created, and leaves what was there untouched.
func Save(ctx context.Context, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	dir, err := openDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	defer dir.Close()

	cfg, err := resolveMember(opts)
	if err != nil {
		return nil, err
	}
	opts.Log.Info("using etcd member", "endpoint", cfg.Endpoint)
	m, err := member.Dial(ctx, cfg)
	if err != nil {
		return nil, exitcode.With(exitcode.Usage, err)
	}
	defer m.Close()

	if opts.WaitForVersion != "" {
		if err := waitForVersion(ctx, m, opts); err != nil {
			return nil, err
		}
	}
	facts := gatherFacts(ctx, m, dir, opts)
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	skipped, err := runPreflight(facts, opts)
	if err != nil {
		return nil, err
	}
	// Even a forced backup needs a member that answers and the running
	// revisions to archive.
	if err := errors.Join(facts.MemberErr, facts.RevisionsErr); err != nil {
		return nil, err
	}
	for _, r := range facts.Revisions {
		opts.Log.Info(fmt.Sprintf("found latest %s-pod: /etc/kubernetes/%s", r.Component, r.Dir))
	}
	if len(facts.Revisions) == 0 {
		opts.Log.Info("kubeadm node: archiving /etc/kubernetes/" + strings.Join(archive.Dirs(nil), " and /etc/kubernetes/"))
	}

	w := &writer{opts: opts, dir: dir, member: m, facts: facts}
	res, err := w.write(ctx, skipped)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return nil, fmt.Errorf("backup abandoned, nothing kept: %w", cause)
		}
		return nil, err
	}
	opts.Log.Info("snapshot db and kube resources are successfully saved to " + dir.path)
	return res, nil
}

func runPreflight(f preflight.Facts, opts Options) ([]manifest.SkippedCheck, error) {
	if opts.Force {
		opts.Log.Warn("--force: preflight checks skipped; files are marked " + manifest.DirtySuffix)
		return preflight.Skip("--force"), nil
	}
	r := preflight.Run(f, preflight.Options{MinClusterAge: opts.MinClusterAge})
	for _, s := range r.Skipped {
		opts.Log.Info("preflight "+s.Name+" skipped", "reason", s.Reason)
	}
	err := r.Err()
	switch {
	case err != nil && f.MemberErr != nil:
		// Even a forced backup needs the member, so --force is no way out.
		return nil, exitcode.With(exitcode.Preflight, fmt.Errorf("%w; retry when the member answers", err))
	case err != nil:
		return nil, exitcode.With(exitcode.Preflight, fmt.Errorf("%w; to back up anyway pass --force (the files are then marked %s)", err, manifest.DirtySuffix))
	}
	opts.Log.Info("preflight checks passed", "checks", strings.Join(r.Passed, ","))
	return r.Skipped, nil
}

// writer carries one backup through writing, checking and committing.
type writer struct {
	opts   Options
	dir    *backupDir
	member *member.Member
	facts  preflight.Facts

	// committed lists files renamed into place, removed again on failure.
	committed []string
}

type written struct {
	file    manifest.File
	summary archive.Summary // resources only
	digest  snapshot.Digest // snapshot only
	status  snapshot.Status // snapshot only
}

func (w *writer) write(ctx context.Context, skipped []manifest.SkippedCheck) (res *Result, err error) {
	defer func() {
		if err != nil {
			for _, p := range w.committed {
				os.Remove(p)
			}
			atomicfile.SyncDir(w.dir.path)
		}
	}()
	now := w.opts.Now().UTC()
	ts := now.Format(manifest.TimestampLayout)
	dirty := w.opts.Force

	snapFile, err := atomicfile.Create(w.dir.path, manifest.SnapshotName(ts, dirty))
	if err != nil {
		return nil, err
	}
	defer snapFile.Abort()
	resFile, err := atomicfile.Create(w.dir.path, manifest.ResourcesName(ts, dirty))
	if err != nil {
		return nil, err
	}
	defer resFile.Abort()

	// The archive is small and local; it is written while the snapshot
	// streams, so it costs no wall time.
	var snap, res0 written
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		snap, err = w.writeSnapshot(gctx, snapFile)
		return err
	})
	g.Go(func() (err error) {
		res0, err = w.writeArchive(gctx, resFile)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, f := range []*atomicfile.File{snapFile, resFile} {
		if err := f.Commit(); err != nil {
			return nil, err
		}
		w.committed = append(w.committed, f.FinalPath())
	}

	b := w.manifest(now, ts, skipped, snap, res0)
	data, err := manifest.Marshal(b)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(w.dir.path, manifest.FileName, data); err != nil {
		return nil, err
	}
	w.committed = append(w.committed, w.dir.join(manifest.FileName))
	// Only now is it a backup: backup.json is what makes the files one.
	w.opts.Log.Info("Snapshot saved at "+snapFile.FinalPath(), "revision", snap.status.Revision, "keys", snap.status.KeyCount, "size", snap.file.Size)
	return &Result{Dir: w.dir.path, SnapshotPath: snapFile.FinalPath(), ResourcesPath: resFile.FinalPath(), Manifest: b}, nil
}

func (w *writer) writeSnapshot(ctx context.Context, f *atomicfile.File) (written, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	meter := progress.Start(ctx, w.opts.Log, "snapshot", w.facts.Member.DBSize, w.opts.ProgressInterval)
	defer meter.Stop()
	stopWatch := meter.Watch(w.opts.StallTimeout, func() {
		cancel(fmt.Errorf("no snapshot data from %s for %s", w.member.Endpoint(), w.opts.StallTimeout))
	})
	defer stopWatch()
	s, err := w.member.Snapshot(ctx)
	if err != nil {
		return written{}, causeOf(ctx, err)
	}
	defer s.Close()
	d, err := snapshot.Copy(io.MultiWriter(f, meter), s)
	if err != nil {
		err = causeOf(ctx, err)
		if errors.Is(err, snapshot.ErrNoTrailer) || errors.Is(err, snapshot.ErrTrailerMismatch) {
			err = exitcode.With(exitcode.Verify, err)
		}
		return written{}, fmt.Errorf("receive snapshot from %s: %w", w.member.Endpoint(), err)
	}
	// The bbolt check reads the pages from the page cache while fsync
	// writes them out: the two overlap instead of adding up.
	var (
		st       snapshot.Status
		checkErr error
		checked  = make(chan struct{})
	)
	go func() {
		defer close(checked)
		st, checkErr = snapshot.Check(ctx, f.PartPath())
	}()
	syncErr := f.Sync()
	<-checked
	if syncErr != nil {
		return written{}, syncErr
	}
	if errors.Is(checkErr, snapshot.ErrCorrupt) {
		return written{}, exitcode.With(exitcode.Verify, checkErr)
	}
	if checkErr != nil {
		// Cut short, or the check could not run: not the snapshot's fault.
		return written{}, causeOf(ctx, checkErr)
	}
	return written{
		file:   fileEntry(f, manifest.KindSnapshot, d.Size, hex.EncodeToString(d.SHA256[:]), d.CRC32C),
		digest: d,
		status: st,
	}, nil
}

// causeOf prefers the reason ctx was cancelled (a stall, a signal, the
// timeout) over the error it produced downstream.
func causeOf(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w: %w", cause, err)
	}
	return err
}

func (w *writer) writeArchive(ctx context.Context, f *atomicfile.File) (written, error) {
	dirs := archive.Dirs(w.facts.Revisions)
	digest := manifest.NewDigest()
	sum, err := archive.Write(ctx, io.MultiWriter(f, digest), filepath.Join(w.opts.HostRoot, "etc", "kubernetes"), dirs)
	if err != nil {
		return written{}, fmt.Errorf("archive control plane resources: %w", err)
	}
	if err := f.Sync(); err != nil {
		return written{}, err
	}
	// Read the archive back as cluster-restore.sh will: it is small, and a
	// layout mistake found now costs nothing, found at restore time a cluster.
	if err := checkArchive(f.PartPath(), dirs); err != nil {
		return written{}, exitcode.With(exitcode.Verify, err)
	}
	return written{file: fileEntry(f, manifest.KindResources, digest.Size(), digest.SHA256(), digest.CRC32C()), summary: sum}, nil
}

func checkArchive(path string, dirs []string) error {
	r, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reopen archive: %w", err)
	}
	defer r.Close()
	if _, err := archive.Check(r, dirs); err != nil {
		return fmt.Errorf("check archive %s: %w", path, err)
	}
	return nil
}

func fileEntry(f *atomicfile.File, kind string, size int64, sha string, crc uint32) manifest.File {
	return manifest.File{
		Name:   filepath.Base(f.FinalPath()),
		Kind:   kind,
		Size:   size,
		Mode:   fmt.Sprintf("%04o", atomicfile.Mode),
		SHA256: sha,
		CRC32C: crc,
	}
}

func (w *writer) manifest(now time.Time, ts string, skipped []manifest.SkippedCheck, snap, res written) *manifest.Backup {
	v := version.Get()
	st := w.facts.Member
	b := &manifest.Backup{
		SchemaVersion: manifest.SchemaPlain,
		Tool:          manifest.Tool{Name: manifest.ToolName, Version: v.Version, Commit: v.Commit},
		CreatedAt:     now,
		Timestamp:     ts,
		Dirty:         w.opts.Force,
		SkippedChecks: skipped,
		Cluster:       manifest.Cluster{Platform: "kubernetes"},
		Etcd: manifest.Etcd{
			MemberName:     st.Name,
			MemberID:       fmt.Sprintf("%x", st.ID),
			Endpoint:       w.member.Endpoint(),
			ServerVersion:  st.Version,
			StorageVersion: firstNonEmpty(snap.status.StorageVersion, st.StorageVersion),
			ClusterID:      fmt.Sprintf("%x", st.ClusterID),
			RaftIndex:      snap.status.ConsistentIndex,
			RaftTerm:       snap.status.Term,
			Revision:       snap.status.Revision,
			KeyCount:       snap.status.KeyCount,
			DBSize:         st.DBSize,
			SnapshotSHA256: hex.EncodeToString(snap.digest.Trailer[:]),
		},
		EncryptionConfigArchived: res.summary.EncryptionConfig,
		EarliestCertExpiry:       res.summary.EarliestCert,
		Files:                    []manifest.File{snap.file, res.file},
	}
	if cv := w.facts.ClusterVersion; cv != nil {
		created := cv.Metadata.CreationTimestamp
		upgrading, _ := cv.Upgrading()
		b.Cluster = manifest.Cluster{
			ID:                cv.Spec.ClusterID,
			Version:           cv.Version(),
			UpgradeInProgress: upgrading,
			Platform:          "openshift",
			CreatedAt:         &created,
		}
	}
	for _, r := range w.facts.Revisions {
		b.StaticPods = append(b.StaticPods, manifest.StaticPod{Component: r.Component, Revision: r.Revision})
	}
	return b
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
