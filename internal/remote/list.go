package remote

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/store"
)

// manifestReaders bounds the backup.json reads List runs at once.
const manifestReaders = 8

// State is what List found a backup to be.
type State string

// States.
const (
	// Complete: backup.json is there, valid, and describes this backup, and
	// every file it lists is there as etcd-backup stored it: the size, the
	// CRC32C the service reports and the SHA-256 in the object's metadata
	// match backup.json, and the metadata says etcd-backup wrote it.
	Complete State = "complete"
	// Incomplete: backup.json or a file it lists is missing, as after an
	// interrupted upload or a prune cut short.
	Incomplete State = "incomplete"
	// Corrupt: what is there disagrees with backup.json, or backup.json
	// cannot be trusted: overwritten, damaged or foreign objects.
	Corrupt State = "corrupt"
)

// Backup is one backup found at a destination.
type Backup struct {
	Ref   Ref
	Time  time.Time
	State State
	// Problem says why a backup is not complete.
	Problem string
	// Manifest is backup.json, when it could be read.
	Manifest *manifest.Backup
	// Objects are the objects below Ref.URL(), by name.
	Objects map[string]*store.Object
}

// Committed is when backup.json was written, or zero when there is none.
func (b *Backup) Committed() time.Time {
	if o := b.Objects[manifest.FileName]; o != nil {
		return o.Created
	}
	return time.Time{}
}

// Size is the size of the backup's files: as backup.json lists them, or the
// objects found when there is none.
func (b *Backup) Size() int64 {
	if b.Manifest != nil {
		return b.Manifest.Size()
	}
	var n int64
	for _, o := range b.Objects {
		n += o.Size
	}
	return n
}

// List returns the backups below dest, newest first. Objects that do not
// sit at <cluster-id>/<ts>[-<sha>]/<file> below it are not backups and are ignored.
func (c *Client) List(ctx context.Context, dest store.URL) ([]*Backup, error) {
	groups := map[Ref]*Backup{}
	for obj, err := range c.Bucket(dest.Bucket).List(ctx, dest.Dir()) {
		if err != nil {
			return nil, noBucket(err)
		}
		ref, file, ok := parseObjectName(dest, obj.Name)
		if !ok {
			continue
		}
		b := groups[ref]
		if b == nil {
			t, _ := parseTimestamp(ref.Timestamp)
			b = &Backup{Ref: ref, Time: t, Objects: map[string]*store.Object{}}
			groups[ref] = b
		}
		b.Objects[file] = obj
	}
	backups := slices.Collect(maps.Values(groups))
	// Newest first; of two in one second, the one committed last.
	slices.SortFunc(backups, func(a, b *Backup) int {
		return cmp.Or(b.Time.Compare(a.Time), b.Committed().Compare(a.Committed()), strings.Compare(a.Ref.ClusterID, b.Ref.ClusterID), strings.Compare(b.Ref.Snapshot, a.Ref.Snapshot))
	})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(manifestReaders)
	for _, b := range backups {
		g.Go(func() error { return c.inspect(gctx, b) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return backups, nil
}

// parseObjectName splits <dest>/<cluster-id>/<ts>[-<sha>]/<file>.
func parseObjectName(dest store.URL, name string) (Ref, string, bool) {
	rest, ok := strings.CutPrefix(name, dest.Dir())
	if !ok {
		return Ref{}, "", false
	}
	segs := strings.Split(rest, "/")
	if len(segs) != 3 || segs[2] == "" || checkClusterID(segs[0]) != nil {
		return Ref{}, "", false
	}
	ts, sha, _, err := parseDir(segs[1])
	if err != nil {
		return Ref{}, "", false
	}
	return Ref{Dest: dest, ClusterID: segs[0], Timestamp: ts, Snapshot: sha}, segs[2], true
}

// inspect reads b's backup.json, if any, and decides b's state from it
// and the objects' attributes, without reading their content. A
// backup.json that cannot be trusted makes the backup corrupt, not the
// listing fail.
func (c *Client) inspect(ctx context.Context, b *Backup) error {
	obj, ok := b.Objects[manifest.FileName]
	if !ok {
		b.State, b.Problem = Incomplete, "no "+manifest.FileName+": upload interrupted or in progress"
		return nil
	}
	if !writtenByUs(obj) {
		b.State, b.Problem = Corrupt, manifest.FileName+" was not written by "+manifest.ToolName
		return nil
	}
	m, err := c.parseManifest(ctx, c.Bucket(b.Ref.Dest.Bucket), b.Ref, obj)
	if exitcode.Of(err) == exitcode.Verify {
		b.State, b.Problem = Corrupt, err.Error()
		return nil
	}
	if err != nil {
		return err
	}
	b.Manifest = m
	var missing string
	for _, f := range m.Files {
		o, err := c.stored(ctx, b, f)
		if err != nil {
			return err
		}
		if o == nil {
			missing = cmp.Or(missing, f.Name+" is missing")
			continue
		}
		if why := mismatch(o, f); why != "" {
			b.State, b.Problem = Corrupt, why
			return nil
		}
	}
	b.State, b.Problem = Complete, missing
	if missing != "" {
		b.State = Incomplete
	}
	return nil
}

// stored returns the object of file f of b, or nil if there is none. A
// file stored elsewhere (upload --resources-to) is looked up there; where
// these credentials may not look, it is taken on trust, as it was
// uploaded with the checksum backup.json records.
func (c *Client) stored(ctx context.Context, b *Backup, f manifest.File) (*store.Object, error) {
	if _, elsewhere := b.Manifest.Locations[f.Name]; !elsewhere {
		return b.Objects[f.Name], nil
	}
	loc, err := c.locate(b.Ref, b.Manifest, f)
	if err != nil {
		return nil, err
	}
	o, err := loc.store.Attrs(ctx, loc.url.Path)
	switch {
	case errors.Is(err, store.ErrNotExist):
		return nil, nil
	case errors.Is(err, store.ErrPermission):
		c.Log.Debug("cannot check "+loc.url.String()+": taken as uploaded", "err", err)
		c := f.Content()
		return &store.Object{Name: loc.url.Path, Size: c.Size, CRC32C: c.CRC32C, Metadata: map[string]string{MetaSHA256: f.SHA256, MetaWrittenBy: manifest.ToolName}}, nil
	}
	return o, err
}

// mismatch says how object o differs from file f as backup.json records
// it, or "" if it does not. An encrypted file is compared by its stored
// bytes, and by the plaintext SHA-256 its upload recorded.
func mismatch(o *store.Object, f manifest.File) string {
	c := f.Content()
	switch {
	case o.Size != c.Size:
		return fmt.Sprintf("%s is %d bytes, %s says %d", f.Name, o.Size, manifest.FileName, c.Size)
	case o.CRC32C != c.CRC32C:
		return fmt.Sprintf("%s has CRC32C %08x, %s says %08x: overwritten or damaged", f.Name, o.CRC32C, manifest.FileName, c.CRC32C)
	case !writtenByUs(o):
		return fmt.Sprintf("%s was not written by %s", f.Name, manifest.ToolName)
	case o.Metadata[MetaSHA256] != f.SHA256:
		return fmt.Sprintf("%s was uploaded with SHA-256 %q, %s says %s", f.Name, o.Metadata[MetaSHA256], manifest.FileName, f.SHA256)
	}
	return ""
}

// nearbyScan bounds how many object names Nearby reads.
const nearbyScan = 1000

// Nearby says what is stored below dest, where List found no backups: the
// backups of one cluster (dest names the cluster's directory, one level too
// deep), backups further down (dest is too shallow), other objects, or
// nothing.
func (c *Client) Nearby(ctx context.Context, dest store.URL) (string, error) {
	var clusterDir bool
	var prefixes []string
	n := 0
	for obj, err := range c.Bucket(dest.Bucket).List(ctx, dest.Dir()) {
		if err != nil {
			return "", noBucket(err)
		}
		if n++; n > nearbyScan {
			break
		}
		segs := strings.Split(strings.TrimPrefix(obj.Name, dest.Dir()), "/")
		k := len(segs)
		switch {
		case k == 2 && isBackupDir(segs[0]):
			clusterDir = true
		case k >= 4 && segs[k-1] == manifest.FileName && isBackupDir(segs[k-2]):
			if p := dest.Join(segs[:k-3]...).String(); !slices.Contains(prefixes, p) {
				prefixes = append(prefixes, p)
			}
		}
	}
	switch {
	case clusterDir && dest.Path != "":
		parent := store.URL{Bucket: dest.Bucket}
		if d := path.Dir(dest.Path); d != "." {
			parent.Path = d
		}
		return fmt.Sprintf("%s holds the backups of one cluster, %s: give the prefix above it, %s", dest, path.Base(dest.Path), parent), nil
	case len(prefixes) > 0:
		return fmt.Sprintf("there are backups further down: give the prefix %s", strings.Join(prefixes[:min(len(prefixes), 3)], " or ")), nil
	case n == 0:
		return "nothing is stored below " + dest.String(), nil
	}
	return fmt.Sprintf("the objects below %s are not backups (<cluster-id>/<ts>-<sha>/<file>)", dest), nil
}

func isBackupDir(seg string) bool {
	_, _, _, err := parseDir(seg)
	return err == nil
}
