// Package remote keeps backups in an object store, laid out as
//
//	<prefix>/<cluster-id>/<ts>-<sha>/snapshot_<ts>.db
//	<prefix>/<cluster-id>/<ts>-<sha>/static_kuberesources_<ts>.tar.gz
//	<prefix>/<cluster-id>/<ts>-<sha>/backup.json
//
// with the same file names as the local backup, so that a download is a
// directory cluster-restore.sh accepts. <sha> is the first 12 hex digits of
// the snapshot's SHA-256: two backups of a cluster in the same second get
// different names, and a re-run of one upload the same. Backups uploaded
// before, under <ts>/ alone, are read, listed and pruned as well. backup.json is written last and
// removed first: it is the commit marker, and a backup without it is never
// complete. It trusts nothing but backup.json, and touches no object it did
// not write.
package remote

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/store"
)

// Store is what this package needs of a bucket.
type Store interface {
	// Put creates name from r, failing with store.ErrExist if it exists. It
	// may seek r back to its start to send it again.
	Put(ctx context.Context, name string, r io.ReadSeeker, o store.PutOptions) (*store.Object, error)
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	Attrs(ctx context.Context, name string) (*store.Object, error)
	List(ctx context.Context, prefix string) iter.Seq2[*store.Object, error]
	// Delete removes the given generation of name only.
	Delete(ctx context.Context, name string, generation int64) error
	// Check fails with store.ErrNoBucket if the bucket does not exist.
	Check(ctx context.Context) error
}

// Client works on backups below gs:// URLs.
type Client struct {
	// Bucket returns the named bucket.
	Bucket func(name string) Store
	Log    *slog.Logger
	// ProgressInterval is how often transfers log progress.
	ProgressInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Client) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// Object metadata set on every uploaded object.
const (
	MetaSHA256         = "sha256"
	MetaRevision       = "etcd-revision"
	MetaClusterVersion = "cluster-version"
	MetaClusterID      = "cluster-id"
	// MetaWrittenBy is "etcd-backup <version>": what prune relies on to
	// recognise a leftover of an interrupted upload as its own.
	MetaWrittenBy = "written-by"
	// MetaEncryptedTo, on an encrypted object, fingerprints the public keys
	// it is encrypted to: what lets a re-run of an interrupted upload take
	// the object as its own.
	MetaEncryptedTo = "encrypted-to"
)

// Ref names one backup: <prefix>/<cluster-id>/<ts>-<sha>, or
// <prefix>/<cluster-id>/<ts> for one uploaded before names carried <sha>.
type Ref struct {
	// Dest is the prefix the backup was uploaded to.
	Dest      store.URL
	ClusterID string
	Timestamp string
	// Snapshot is the first digestLen hex digits of the snapshot's
	// SHA-256, or "" in the old layout.
	Snapshot string
}

// digestLen is how many hex digits of the snapshot's SHA-256 a backup's
// name carries: 48 bits, so that two snapshots of one cluster taken in the
// same second never share a name by chance.
const digestLen = 12

// dir is the backup's own path segment.
func (r Ref) dir() string {
	if r.Snapshot == "" {
		return r.Timestamp
	}
	return r.Timestamp + "-" + r.Snapshot
}

// URL is where the backup's objects are.
func (r Ref) URL() store.URL { return r.Dest.Join(r.ClusterID, r.dir()) }

func (r Ref) String() string { return r.URL().String() }

// object is the name of one of the backup's files in the bucket.
func (r Ref) object(file string) string { return r.URL().Join(file).Path }

// clusterIDs are OpenShift cluster UUIDs or etcd cluster IDs in hex: one
// path segment of at most 128 characters that is neither "." nor "..". (The
// length is checked apart, as for bucket names in package store.)
var clusterID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func checkClusterID(id string) error {
	if len(id) > 128 || !clusterID.MatchString(id) {
		return fmt.Errorf("cluster ID %q cannot be a path segment", id)
	}
	return nil
}

// snapshotDigest is <hex>{digestLen}, lowercase as manifest records it.
var snapshotDigest = regexp.MustCompile(`^[0-9a-f]+$`)

// parseDir splits a backup's path segment, <ts>-<sha> or <ts>. A
// timestamp has dashes of its own, and a fixed length.
func parseDir(seg string) (ts, sha string, t time.Time, err error) {
	ts = seg
	if n := len(manifest.TimestampLayout); len(seg) > n && seg[n] == '-' {
		ts, sha = seg[:n], seg[n+1:]
		if len(sha) != digestLen || !snapshotDigest.MatchString(sha) {
			return "", "", time.Time{}, fmt.Errorf("%q is not <%s>-<%d hex digits of the snapshot's SHA-256>", seg, manifest.TimestampLayout, digestLen)
		}
	}
	if t, err = parseTimestamp(ts); err != nil {
		return "", "", time.Time{}, err
	}
	return ts, sha, t, nil
}

func parseTimestamp(ts string) (time.Time, error) {
	t, err := time.Parse(manifest.TimestampLayout, ts)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a backup timestamp (%s)", ts, manifest.TimestampLayout)
	}
	return t, nil
}

// ParseRef parses gs://bucket/prefix/<cluster-id>/<ts>-<sha>, as list
// prints it, or .../<ts> for a backup uploaded before names carried <sha>.
func ParseRef(s string) (Ref, error) {
	u, err := store.ParseURL(s)
	if err != nil {
		return Ref{}, usage(err)
	}
	segs := strings.Split(u.Path, "/")
	bad := func(why error) error {
		return usage(fmt.Errorf("%s does not name one backup (%v): want gs://bucket/prefix/<cluster-id>/<%s>-<sha> as 'etcd-backup list' prints, or --latest with the prefix", s, why, manifest.TimestampLayout))
	}
	if len(segs) < 2 {
		return Ref{}, bad(errors.New("too few path segments"))
	}
	id := segs[len(segs)-2]
	ts, sha, _, err := parseDir(segs[len(segs)-1])
	if err != nil {
		if _, _, _, derr := parseDir(id); derr == nil && len(segs) >= 3 {
			// One of the backup's objects, as upload's snapshot-uri,
			// resources-uri and manifest-uri name them.
			u.Path = strings.Join(segs[:len(segs)-1], "/")
			return Ref{}, usage(fmt.Errorf("%s is one of the objects of the backup %s: give the backup", s, u))
		}
		return Ref{}, bad(err)
	}
	if err := checkClusterID(id); err != nil {
		return Ref{}, bad(err)
	}
	u.Path = strings.Join(segs[:len(segs)-2], "/")
	return Ref{Dest: u, ClusterID: id, Timestamp: ts, Snapshot: sha}, nil
}

// refOf names backup b below dest.
func refOf(dest store.URL, b *manifest.Backup) Ref {
	ref := Ref{Dest: dest, ClusterID: b.ClusterKey(), Timestamp: b.Timestamp}
	if f := b.File(manifest.KindSnapshot); f != nil && len(f.SHA256) >= digestLen {
		ref.Snapshot = f.SHA256[:digestLen]
	}
	return ref
}

func usage(err error) error { return exitcode.With(exitcode.Usage, err) }

// noBucket makes a bucket that does not exist a configuration error (exit
// 2): retrying cannot help.
func noBucket(err error) error {
	if errors.Is(err, store.ErrNoBucket) {
		return usage(fmt.Errorf("%w: create it, or correct the gs:// URL", err))
	}
	return err
}

// checkBuckets checks that the buckets of urls exist, before anything is
// sent to them.
func (c *Client) checkBuckets(ctx context.Context, urls ...store.URL) error {
	seen := map[string]bool{}
	for _, u := range urls {
		if seen[u.Bucket] {
			continue
		}
		seen[u.Bucket] = true
		if err := c.Bucket(u.Bucket).Check(ctx); err != nil {
			return noBucket(err)
		}
	}
	return nil
}

// failed marks a backup that is not what it claims to be (exit 4).
func failed(format string, a ...any) error {
	return exitcode.With(exitcode.Verify, fmt.Errorf(format, a...))
}

// location is where one file of a backup is stored.
type location struct {
	store Store
	url   store.URL
}

// locate finds file f of the backup at ref: next to backup.json, or where
// backup.json's Locations says (upload --resources-to).
func (c *Client) locate(ref Ref, b *manifest.Backup, f manifest.File) (location, error) {
	s, ok := b.Locations[f.Name]
	if !ok {
		u := ref.URL().Join(f.Name)
		return location{store: c.Bucket(u.Bucket), url: u}, nil
	}
	u, err := store.ParseURL(s)
	if err != nil || !strings.HasSuffix("/"+u.Path, "/"+f.Name) {
		return location{}, failed("%s: %s records location %q for %s, which is not a gs:// URL of that file", ref, manifest.FileName, s, f.Name)
	}
	return location{store: c.Bucket(u.Bucket), url: u}, nil
}

// readManifest reads and checks the backup.json of ref.
func (c *Client) readManifest(ctx context.Context, ref Ref) (*manifest.Backup, *store.Object, error) {
	st := c.Bucket(ref.Dest.Bucket)
	name := ref.object(manifest.FileName)
	obj, err := st.Attrs(ctx, name)
	if errors.Is(err, store.ErrNotExist) {
		return nil, nil, c.absent(ctx, ref)
	}
	if err != nil {
		return nil, nil, err
	}
	b, err := c.parseManifest(ctx, st, ref, obj)
	if err != nil {
		return nil, nil, err
	}
	return b, obj, nil
}

// absent explains why ref has no backup.json: its bucket does not exist
// (exit 2); no such backup, a mistyped URL (exit 2, naming the nearest
// backups of the cluster); or its upload did not finish (exit 4).
func (c *Client) absent(ctx context.Context, ref Ref) error {
	backups, err := c.List(ctx, ref.Dest)
	if err != nil {
		return err
	}
	var same []*Backup
	for _, b := range backups {
		if b.Ref == ref {
			return failed("%s has no %s: not a complete backup (see 'etcd-backup list %s')", ref, manifest.FileName, ref.Dest)
		}
		if b.Ref.ClusterID == ref.ClusterID {
			same = append(same, b)
		}
	}
	if len(same) == 0 {
		return usage(fmt.Errorf("%w %s: there is no backup of cluster %s below %s (see 'etcd-backup list %s')", destination.ErrNoSuchBackup, ref, ref.ClusterID, ref.Dest, ref.Dest))
	}
	t, _ := parseTimestamp(ref.Timestamp)
	slices.SortStableFunc(same, func(a, b *Backup) int {
		return cmp.Compare(a.Time.Sub(t).Abs(), b.Time.Sub(t).Abs())
	})
	var near []string
	for _, b := range same[:min(len(same), 3)] {
		near = append(near, b.Ref.String()+" ("+string(b.State)+")")
	}
	return usage(fmt.Errorf("%w %s; the nearest are %s", destination.ErrNoSuchBackup, ref, strings.Join(near, ", ")))
}

// parseManifest reads the given generation of backup.json and checks that
// it describes the backup it sits in.
func (c *Client) parseManifest(ctx context.Context, st Store, ref Ref, obj *store.Object) (*manifest.Backup, error) {
	r, err := st.Open(ctx, obj.Name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := manifest.Parse(r)
	if errors.Is(err, manifest.ErrInvalid) || errors.Is(err, store.ErrCorrupt) {
		return nil, failed("%s: %w", ref, err)
	}
	if err != nil {
		// Cut off on the way, which says nothing about the backup; the
		// error names the object.
		return nil, err
	}
	if b.ClusterKey() != ref.ClusterID || b.Timestamp != ref.Timestamp || (ref.Snapshot != "" && refOf(ref.Dest, b).Snapshot != ref.Snapshot) {
		return nil, failed("%s: %s describes backup %s of cluster %s, not this one", ref, manifest.FileName, refOf(ref.Dest, b).dir(), b.ClusterKey())
	}
	return b, nil
}
