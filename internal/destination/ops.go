package destination

import (
	"bytes"
	"cmp"
	"context"
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
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/encryption"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/smallfile"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

// UploadDir stores the backup in dir, encrypted to the recipients unless
// to is nil. Each file is checked against backup.json as it is read, before
// it is encrypted; a file that fails the check fails the upload and nothing
// is committed.
func UploadDir(ctx context.Context, d Dest, dir string, to *encryption.Recipients) (_ Result, err error) {
	b, err := verify.Listing(dir)
	if err != nil {
		return Result{}, err
	}
	// The snapshot's structure needs the whole file: it is checked while
	// the files are sent, on another core, and must pass before the
	// commit. A failed check stops the sending at once; what was sent is
	// then never committed.
	plain := b // read by the check: never written from here on
	ctx, stop := context.WithCancelCause(ctx)
	structure := make(chan error, 1)
	go func() {
		err := verify.Snapshot(ctx, filepath.Join(dir, plain.File(manifest.KindSnapshot).Name), plain)
		if err != nil {
			stop(err)
		}
		structure <- err
	}()
	structureErr := func() error {
		err := <-structure
		structure <- err
		return err
	}
	defer func() {
		stop(nil)
		// A send cut short by a failed check fails with the check's error.
		if serr := structureErr(); err != nil && serr != nil && errors.Is(context.Cause(ctx), serr) {
			err = serr
		}
	}()
	// b is the backup as stored: Put fills in its files.
	if to != nil {
		b = to.Plan(plain)
	} else {
		stored := *plain
		stored.Files = slices.Clone(plain.Files)
		b = &stored
	}
	up, err := d.Begin(ctx, b)
	if err != nil {
		return Result{}, err
	}
	defer up.Close()
	// The files go at once: the small ones travel while the snapshot does,
	// instead of each paying its round trips after it. The first to fail
	// stops the others.
	g, gctx := errgroup.WithContext(ctx)
	verdict := make(chan error, 1) // the first file found bad
	for i, f := range b.Files {
		open := func() (io.ReadCloser, error) {
			path := filepath.Join(dir, f.Name)
			file, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			want := plain.Files[i]
			want.Name = path // as the check's verdict names it
			checked := readCloser{verify.NewReader(ctx, file, plain, want), file, verdict}
			if to == nil {
				return checked, nil
			}
			enc, err := to.Encrypt(checked)
			if err != nil {
				checked.Close()
				return nil, err
			}
			return withCloser{enc, checked}, nil
		}
		g.Go(func() error {
			var err error
			b.Files[i], _, err = up.Put(gctx, f, open)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		// A send cut short by a bad file fails with what is wrong with
		// the file, not with how the destination saw the send end.
		select {
		case v := <-verdict:
			return Result{}, v
		default:
			return Result{}, err
		}
	}
	if err := structureErr(); err != nil {
		return Result{}, err
	}
	return up.Commit(ctx, b)
}

// readCloser closes the check and then the file under it, and passes the
// check's first verdict on a bad file to verdict.
type readCloser struct {
	*verify.Reader
	file    *os.File
	verdict chan<- error
}

func (r readCloser) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	if err != nil && err != io.EOF && exitcode.Of(err) == exitcode.Verify {
		select {
		case r.verdict <- err:
		default:
		}
	}
	return n, err
}

func (r readCloser) Close() error {
	r.Reader.Close()
	return r.file.Close()
}

// Download writes the stored backup name into dir, which must be new or
// empty, laid out as save wrote it: each file as "<name>.part", checked as
// it streams (and the snapshot's structure once whole) before it takes its
// name, then backup.json. An encrypted backup is decrypted with id as it
// streams, and its stored bytes are checked too; dir then holds the
// plaintext backup, as save wrote it. On any failure nothing is left in
// dir, and a dir it created is removed. A dir that holds this backup
// already, as Download writes it, is left as it is: ErrDownloaded.
func Download(ctx context.Context, d Dest, name, dir string, id *encryption.Identity) (*manifest.Backup, error) {
	s, err := d.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b, err := download(ctx, d, name, s, dir, id)
	if err != nil {
		return nil, noRoom(err, dir, s.Manifest().Size())
	}
	return b, nil
}

// noRoom says what to do about err when it is the file system of dir out
// of space or quota for a download of need bytes, and returns err as it is
// otherwise.
func noRoom(err error, dir string, need int64) error {
	if !atomicfile.NoRoom(err) {
		return err
	}
	return fmt.Errorf("%w: the backup needs about %s in %s: free space there, or download into a directory with room", err, progress.Bytes(need), dir)
}

// download writes the opened backup s, named name at d, into dir.
func download(ctx context.Context, d Dest, name string, s Stored, dir string, id *encryption.Identity) (_ *manifest.Backup, err error) {
	b := s.Manifest()
	raw := s.Raw()
	if b.Encrypted() {
		if raw, err = manifest.Marshal(b.Plain()); err != nil {
			return nil, err
		}
	}
	// A copy downloaded before is plaintext: it needs no identity.
	if holds(dir, raw) {
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("download directory %s %w: check it with 'etcd-backup verify %s', or give a new or empty directory", dir, ErrDownloaded, dir))
	}
	if b.Encrypted() && id == nil {
		keys, whose := b.Recipients(), "its private key"
		if len(keys) > 1 {
			whose = "the private key of one of them"
		}
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s is encrypted to %s: give the identity that holds %s with --identity FILE", name, strings.Join(keys, ", "), whose))
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
		}
	}()
	for _, f := range b.Files {
		if err := atomicfile.Fits(dir, f.Name, f.Size); err != nil {
			return nil, err
		}
	}
	for _, f := range b.Files {
		path, err := fetch(ctx, s, b, f, dir, id, d.URL())
		if err != nil {
			return nil, err
		}
		committed = append(committed, path)
	}
	if err := atomicfile.WriteFile(dir, manifest.FileName, raw); err != nil {
		return nil, err
	}
	return b, nil
}

// ErrDownloaded is Download's error when dir holds the backup already, as
// the download would have written it: a re-run, which need not fetch it
// again, but whose copy is to be checked.
var ErrDownloaded = errors.New("holds this backup already")

// holds reports whether dir holds a backup.json that is raw.
func holds(dir string, raw []byte) bool {
	data, err := smallfile.Read(filepath.Join(dir, manifest.FileName), int64(len(raw)))
	return err == nil && bytes.Equal(data, raw)
}

// prepareDir creates dir, or checks that it is an empty directory.
func prepareDir(dir string) (created bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, exitcode.With(exitcode.Usage, fmt.Errorf("create download directory: %w", err))
		}
		return true, nil
	case errors.Is(err, syscall.ENOTDIR):
		return false, exitcode.With(exitcode.Usage, fmt.Errorf("download directory %s %s: give a new or empty directory", dir, fileOn(dir)))
	case err != nil:
		return false, exitcode.With(exitcode.Usage, fmt.Errorf("download directory: %w", err))
	case len(entries) > 0:
		return false, exitcode.With(exitcode.Usage, fmt.Errorf("download directory %s is not empty: give a new or empty directory", dir))
	}
	if err := atomicfile.Writable(dir); err != nil {
		return false, exitcode.With(exitcode.Usage, fmt.Errorf("download directory %s is not writable: %w: give a directory that uid %d may write (in a pod, a volume its fsGroup owns)", dir, err, os.Getuid()))
	}
	return false, nil
}

// fileOn says which file stands where the path dir needs a directory:
// dir itself, or the nearest of its parents.
func fileOn(dir string) string {
	for p := dir; ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			if p == dir {
				return "is a file"
			}
			return "lies under " + p + ", which is a file"
		}
		if p == filepath.Dir(p) {
			return "is not a directory"
		}
	}
}

// fetch writes file f of the stored backup into dir, checked before it
// takes its name, and returns its path. A check that fails is told with
// where the backup is stored; what could not be read or written names
// itself.
func fetch(ctx context.Context, s Stored, b *manifest.Backup, f manifest.File, dir string, id *encryption.Identity, where string) (string, error) {
	r, err := open(ctx, s, f, id)
	if err != nil {
		return "", err
	}
	defer r.Close()
	part, err := atomicfile.Create(dir, f.Name)
	if err != nil {
		return "", err
	}
	defer part.Abort()
	out := &errWriter{w: part}
	err = verify.Stream(ctx, io.TeeReader(r, out), b, f)
	switch {
	case out.err != nil:
		// The local disk failed, not the backup.
		return "", out.err
	case err != nil:
		return "", fmt.Errorf("%s: %w", where, err)
	}
	if f.Kind == manifest.KindSnapshot {
		if err := verify.Snapshot(ctx, part.PartPath(), b); err != nil {
			return "", err
		}
	}
	mode, err := strconv.ParseUint(cmp.Or(f.Mode, "0600"), 8, 32)
	if err != nil {
		return "", exitcode.With(exitcode.Verify, fmt.Errorf("%s: mode %q: %w", f.Name, f.Mode, err))
	}
	if err := os.Chmod(part.PartPath(), os.FileMode(mode)&0o700); err != nil {
		return "", err
	}
	if err := part.Commit(); err != nil {
		return "", err
	}
	return part.FinalPath(), nil
}

// errWriter keeps the first write error, so that a failing local disk is
// not reported as a corrupt backup.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// open returns the plaintext of f: its stored bytes, decrypted with id
// and checked against their stored record when f is stored encrypted.
func open(ctx context.Context, s Stored, f manifest.File, id *encryption.Identity) (io.ReadCloser, error) {
	r, err := s.Open(ctx, f)
	if err != nil || f.Stored == nil {
		return r, err
	}
	plain, err := id.Unseal(r, f)
	if err != nil {
		r.Close()
		return nil, err
	}
	return withCloser{plain, r}, nil
}

// withCloser reads through a transformation of a stream and closes the
// stream under it.
type withCloser struct {
	io.Reader
	io.Closer
}

// Verify checks every file of the stored backup name as it streams. With
// opts.Restore it downloads the backup into a scratch directory and checks
// that, the snapshot's structure and a trial restore included. An encrypted
// backup is decrypted with id; without one, only its stored bytes can be
// checked, and the log says so: the scheduled verify in the cluster never
// holds the key, and still finds a damaged or stale backup.
func Verify(ctx context.Context, d Dest, name string, opts verify.Options, id *encryption.Identity) (*manifest.Backup, error) {
	log := orDiscard(opts.Log)
	s, err := d.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b := s.Manifest()
	if opts.Restore && b.Encrypted() && id == nil {
		log.Warn("no trial restore: " + name + " is encrypted and no --identity was given")
		opts.Restore = false
	}
	if opts.Restore {
		scratch, err := os.MkdirTemp(opts.ScratchDir, "etcd-backup-download-*")
		if err != nil {
			return nil, fmt.Errorf("create scratch directory for the download: %w", err)
		}
		defer os.RemoveAll(scratch)
		dir := filepath.Join(scratch, "backup")
		opts.ScratchHeld = b.Size()
		if _, err := download(ctx, d, name, s, dir, id); err != nil {
			return nil, verify.ScratchFull(err, b, filepath.Dir(scratch), opts.ScratchHeld)
		}
		return verify.Dir(ctx, dir, opts)
	}
	for _, f := range b.Files {
		if err := verifyFile(ctx, s, b, f, id, d.URL()); err != nil {
			return nil, err
		}
		if f.Stored != nil && id == nil {
			log.Warn("checked the stored bytes of "+f.Name+"; its contents were not checked: it is encrypted and no --identity was given", "backup", name, "sha256", f.Stored.SHA256, "size", f.Stored.Size)
			continue
		}
		log.Info("verified "+f.Name, "backup", name, "sha256", f.SHA256, "size", f.Size)
	}
	return b, nil
}

// verifyFile checks f of b, stored at where, as it streams. What the
// destination could not read names itself; a check that fails is told
// with where.
func verifyFile(ctx context.Context, s Stored, b *manifest.Backup, f manifest.File, id *encryption.Identity, where string) error {
	sealedOnly := f.Stored != nil && id == nil
	var r io.ReadCloser
	var err error
	if sealedOnly {
		r, err = s.Open(ctx, f)
	} else {
		r, err = open(ctx, s, f, id)
	}
	if err != nil {
		return err
	}
	defer r.Close()
	if sealedOnly {
		// A mismatch is exit 4; a stream that failed says what it is.
		_, err = io.Copy(io.Discard, encryption.CheckStored(r, f))
	} else {
		err = verify.Stream(ctx, r, b, f)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

// ErrNoBackup is returned by Newest when the destination holds no complete
// backup.
var ErrNoBackup = errors.New("no complete backup")

// Latest calls use on the newest complete backup that Newest found.
func Latest(_ Dest, found Found, log *slog.Logger, use func(name string) (*manifest.Backup, error)) (*manifest.Backup, error) {
	orDiscard(log).Info("newest complete backup: " + found.Complete[0].URL)
	return use(found.Complete[0].Name)
}

// LatestGood calls use on the newest complete backup that Newest found at
// d, and while use finds the backup fails its check (exit 4), on the next
// newest: a registry or a layout, unlike Cloud Storage, tells of bytes
// changed where they rest only when they are read. It logs each backup it
// passes over, and why, and returns what use returned for the last one it
// tried.
func LatestGood(d Dest, found Found, log *slog.Logger, use func(name string) (*manifest.Backup, error)) (*manifest.Backup, error) {
	log = orDiscard(log)
	good := found.Complete
	for i, e := range good {
		if i == 0 {
			log.Info("newest complete backup: " + e.URL)
		} else {
			log.Info("next newest complete backup: " + e.URL)
		}
		b, err := use(e.Name)
		switch {
		case exitcode.Of(err) != exitcode.Verify:
			return b, err
		case i == len(good)-1 && i > 0:
			return nil, fmt.Errorf("each of the %d complete backups at %s fails its check (see the log); the oldest: %w", len(good), d.URL(), err)
		case i == len(good)-1:
			return nil, err
		}
		log.Warn("skipping "+e.URL+", which fails its check; trying the next newest", "error", err)
	}
	panic("unreachable: Newest finds at least one complete backup")
}

// Found is one cluster's backups at a destination, as Newest lists them.
type Found struct {
	// Complete are the complete backups, newest first: at least one.
	Complete []Entry
	// Corrupt are the backups that list calls corrupt, of any age: prune
	// leaves them for an operator, and the newest good backup is taken
	// over them.
	Corrupt []Entry
}

// MaxClockSkew is how far after this machine's clock a backup may be dated
// before a clock is called wrong: Kerberos's bound on skew.
const MaxClockSkew = 5 * time.Minute

// Ahead returns the complete backups dated more than MaxClockSkew after
// now: taken on a master whose clock was ahead, or read on a machine whose
// clock is behind. Either way, the newest by date may not be the last taken.
func (f Found) Ahead(now time.Time) []Entry {
	var out []Entry
	for _, e := range f.Complete {
		if e.Dated().Sub(now) > MaxClockSkew {
			out = append(out, e)
		}
	}
	return out
}

// Fallback returns the newest complete backup older than backup name that
// was not taken with --force: where a restore falls back to when name was
// forced and does not restore. Any newer one was tried before name, and
// failed its check.
func (f Found) Fallback(name string) (Entry, bool) {
	older := false
	for _, e := range f.Complete {
		if older && !e.Forced() {
			return e, true
		}
		older = older || e.Name == name
	}
	return Entry{}, false
}

// Newest lists the backups of cluster or, when cluster is empty, of the
// only cluster there. It finds at least one complete backup, or returns an
// error wrapping ErrNoBackup. It logs each incomplete or corrupt backup
// newer than the newest complete one.
func Newest(ctx context.Context, d Dest, cluster string, log *slog.Logger) (Found, error) {
	log = orDiscard(log)
	entries, err := d.List(ctx)
	if err != nil {
		return Found{}, err
	}
	var good, skipped []Entry
	var clusters, others []string
	for _, e := range entries {
		switch {
		case cluster != "" && e.ClusterID != cluster:
			if !slices.Contains(others, e.ClusterID) {
				others = append(others, e.ClusterID)
			}
		case e.State != Complete:
			skipped = append(skipped, e)
		default:
			if !slices.Contains(clusters, e.ClusterID) {
				clusters = append(clusters, e.ClusterID)
			}
			good = append(good, e)
		}
	}
	if len(clusters) > 1 {
		slices.Sort(clusters)
		return Found{}, exitcode.With(exitcode.Usage, fmt.Errorf("%s holds backups of several clusters (%s): choose one with --cluster-id", d.URL(), strings.Join(clusters, ", ")))
	}
	slices.SortStableFunc(good, func(a, b Entry) int { return Compare(b, a) })
	found := Found{Complete: good}
	for _, e := range skipped {
		if len(good) == 0 || e.ClusterID == good[0].ClusterID {
			if e.State == Corrupt {
				found.Corrupt = append(found.Corrupt, e)
			}
			if len(good) == 0 || Compare(e, good[0]) > 0 {
				log.Warn("skipping " + e.URL + ", which is " + string(e.State) + ": " + e.Problem)
			}
		}
	}
	switch {
	case len(good) > 0:
		return found, nil
	case len(skipped) > 0:
		return Found{}, fmt.Errorf("%w at %s: the %d found are incomplete or corrupt (see 'etcd-backup list %s')", ErrNoBackup, d.URL(), len(skipped), d.URL())
	case cluster != "" && len(others) > 0:
		// Most often a cluster ID mistyped, or one from before a reinstall.
		slices.Sort(others)
		return Found{}, fmt.Errorf("%w of cluster %s at %s, which holds backups of %s only (see 'etcd-backup list %s')", ErrNoBackup, cluster, d.URL(), strings.Join(others, ", "), d.URL())
	case cluster != "":
		return Found{}, fmt.Errorf("%w of cluster %s at %s", ErrNoBackup, cluster, d.URL())
	}
	hint := "nothing is stored there"
	if h, ok := d.(Hinter); ok {
		if hint, err = h.Nearby(ctx); err != nil {
			return Found{}, err
		}
	}
	return Found{}, fmt.Errorf("%w at %s: %s", ErrNoBackup, d.URL(), hint)
}

// orDiscard returns log, or a logger that drops everything for nil.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// Compare orders entries oldest first: by <ts>, then creation time, then name.
func Compare(a, b Entry) int {
	return cmp.Or(cmp.Compare(a.Timestamp, b.Timestamp), a.Created.Compare(b.Created), cmp.Compare(a.Name, b.Name))
}

// StoredReason is why prune keeps Policy.Stored.
const StoredReason = "stored by this upload"

// Policy says which complete backups prune keeps; a backup any rule keeps
// is kept, and the newest complete backup of a cluster always is.
type Policy struct {
	// KeepLast keeps the newest N backups of each cluster.
	KeepLast int
	// KeepWithin keeps the backups younger than this.
	KeepWithin time.Duration
	// Stored names the backup this run has just stored, kept whatever the
	// rules say: one taken long ago and uploaded late, or taken on a master
	// whose clock was behind, would otherwise be gone as upload reports it.
	Stored string
}

// Check rejects a policy that keeps nothing or has negative values.
func (p Policy) Check() error {
	switch {
	case p.KeepLast < 0 || p.KeepWithin < 0:
		return exitcode.With(exitcode.Usage, errors.New("--keep-last and --keep-within must not be negative"))
	case p.KeepLast == 0 && p.KeepWithin == 0:
		return exitcode.With(exitcode.Usage, errors.New("no retention policy: give --keep-last, --keep-within or both"))
	}
	return nil
}

// Guard notes, cluster by cluster, the complete backups prune keeps
// whatever its rules say: the newest; the newest dated no later than this
// machine's clock allows, which differs when a master's clock was ahead and
// the backup its date puts first may not be the last taken; and the newest
// taken with its preflight checks, which differs when the newer ones were
// taken with --force, through a spell in which the cluster was not fit to
// back up, and may not restore.
type Guard struct {
	now                  time.Time
	newest, dated, clean map[string]bool
}

// NewGuard returns a Guard for a prune at now.
func NewGuard(now time.Time) *Guard {
	return &Guard{now: now, newest: map[string]bool{}, dated: map[string]bool{}, clean: map[string]bool{}}
}

// Keeps is given the date of each complete backup of cluster, and whether
// it was taken with --force, newest first; it says why the backup must be
// kept, or "".
func (g *Guard) Keeps(cluster string, dated time.Time, dirty bool) string {
	inTime := dated.Sub(g.now) <= MaxClockSkew
	first, firstInTime, firstClean := !g.newest[cluster], inTime && !g.dated[cluster], !dirty && !g.clean[cluster]
	g.newest[cluster] = true
	g.dated[cluster] = g.dated[cluster] || inTime
	g.clean[cluster] = g.clean[cluster] || !dirty
	switch {
	case first:
		return "newest complete backup"
	case firstInTime:
		return "newest complete backup not dated after this machine's clock (a later date came from a clock ahead)"
	case firstClean:
		return "newest complete backup taken with its preflight checks (the newer ones were taken with --force)"
	}
	return ""
}

// Action is what Prune does with a backup.
type Action string

// Actions.
const (
	Keep   Action = "keep"
	Remove Action = "remove"
	// Skip: the policy would remove the backup, but it must not be touched.
	Skip Action = "skip"
)

// Decision is what Prune did, or with a dry run would do, with one backup.
type Decision struct {
	Entry  Entry
	Action Action
	Reason string
}

// Pruner is a Dest with retention rules of its own kind (Cloud Storage:
// holds, and the leftovers of interrupted uploads); Prune leaves the work
// to it.
type Pruner interface {
	Prune(ctx context.Context, p Policy, cluster string, dryRun bool) ([]Decision, error)
}

// Hinter is a Dest that can say what it holds where it holds no backup.
type Hinter interface {
	Nearby(ctx context.Context) (string, error)
}

// Prune applies p to the backups of cluster (every cluster when empty) and
// deletes, newest first per cluster, the complete backups this tool wrote
// that no rule keeps; never the newest complete backup of a cluster.
// Incomplete, corrupt and foreign backups are left alone and do not count;
// one that a Pinner finds under another name is skipped.
// With dryRun it decides and deletes nothing.
func Prune(ctx context.Context, d Dest, p Policy, cluster string, now time.Time, dryRun bool) ([]Decision, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	if pr, ok := d.(Pruner); ok {
		return pr.Prune(ctx, p, cluster, dryRun)
	}
	entries, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(entries, func(a, b Entry) int { return Compare(b, a) })
	guard := NewGuard(now)
	ours := map[string]int{}
	var out []Decision
	for _, e := range entries {
		if cluster != "" && e.ClusterID != cluster {
			continue
		}
		dec, err := skipPinned(ctx, d, decide(e, p, now, guard, ours))
		if err != nil {
			return out, err
		}
		if dec.Action == Remove && dryRun {
			dec.Reason += " (dry run: nothing deleted)"
		} else if dec.Action == Remove {
			err := d.Delete(ctx, e.Name)
			switch {
			case errors.Is(err, ErrNoSuchBackup):
				// Another run's prune (a second schedule, a second
				// master) deleted it since the listing.
				dec.Reason += "; already deleted by another run"
			case err != nil:
				return out, err
			}
		}
		out = append(out, dec)
	}
	return out, nil
}

// skipPinned turns dec, when it removes a backup that d finds under
// another name, into a Skip.
func skipPinned(ctx context.Context, d Dest, dec Decision) (Decision, error) {
	pd, ok := d.(Pinner)
	if !ok || dec.Action != Remove {
		return dec, nil
	}
	pins, err := pd.PinnedBy(ctx, dec.Entry.Name)
	switch {
	case err != nil:
		return dec, err
	case len(pins) == 0:
		return dec, nil
	case len(pins) == 1:
		dec.Reason += ", but " + pins[0] + " also names it"
	default:
		dec.Reason += fmt.Sprintf(", but %s and %d other names also name it", pins[0], len(pins)-1)
	}
	dec.Action, dec.Reason = Skip, dec.Reason+"; left untouched"
	return dec, nil
}

func decide(e Entry, p Policy, now time.Time, guard *Guard, ours map[string]int) Decision {
	keep := func(reason string) Decision { return Decision{Entry: e, Action: Keep, Reason: reason} }
	switch {
	case e.State != Complete:
		return keep(string(e.State) + " (" + e.Problem + "); left for an operator")
	case !e.Ours:
		return keep("not written by etcd-backup")
	}
	ours[e.ClusterID]++
	if why := guard.Keeps(e.ClusterID, e.Dated(), e.Forced()); why != "" {
		return keep(why)
	}
	switch {
	case e.Name == p.Stored:
		return keep(StoredReason)
	case p.KeepLast > 0 && ours[e.ClusterID] <= p.KeepLast:
		return keep(fmt.Sprintf("one of the newest %d (--keep-last)", p.KeepLast))
	case p.KeepWithin > 0 && now.Sub(e.Created) < p.KeepWithin:
		return keep(fmt.Sprintf("younger than %s (--keep-within)", p.KeepWithin))
	}
	return Decision{Entry: e, Action: Remove, Reason: "outside the retention policy"}
}
