package remote

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
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

// Backup is one backup found at a destination.
type Backup struct {
	Ref  Ref
	Time time.Time
	// Complete is set when backup.json is there, valid, describes this
	// backup, and every file it lists next to it is there with its size.
	Complete bool
	// Problem says why a backup is not complete.
	Problem string
	// Manifest is backup.json, when it could be read.
	Manifest *manifest.Backup
	// Objects are the objects below Ref.URL(), by name.
	Objects map[string]*store.Object
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
// sit at <cluster-id>/<ts>/<file> below it are not backups and are ignored.
func (c *Client) List(ctx context.Context, dest store.URL) ([]*Backup, error) {
	groups := map[Ref]*Backup{}
	for obj, err := range c.Bucket(dest.Bucket).List(ctx, dest.Dir()) {
		if err != nil {
			return nil, err
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
	slices.SortFunc(backups, func(a, b *Backup) int {
		return cmp.Or(b.Time.Compare(a.Time), strings.Compare(a.Ref.ClusterID, b.Ref.ClusterID))
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

// parseObjectName splits <dest>/<cluster-id>/<ts>/<file>.
func parseObjectName(dest store.URL, name string) (Ref, string, bool) {
	rest, ok := strings.CutPrefix(name, dest.Dir())
	if !ok {
		return Ref{}, "", false
	}
	segs := strings.Split(rest, "/")
	if len(segs) != 3 || segs[2] == "" || checkClusterID(segs[0]) != nil {
		return Ref{}, "", false
	}
	if _, err := parseTimestamp(segs[1]); err != nil {
		return Ref{}, "", false
	}
	return Ref{Dest: dest, ClusterID: segs[0], Timestamp: segs[1]}, segs[2], true
}

// inspect reads b's backup.json, if any, and decides whether b is complete.
// A backup.json that cannot be trusted makes the backup incomplete, not the
// listing fail.
func (c *Client) inspect(ctx context.Context, b *Backup) error {
	obj, ok := b.Objects[manifest.FileName]
	if !ok {
		b.Problem = "no " + manifest.FileName + ": upload interrupted or in progress"
		return nil
	}
	m, err := c.parseManifest(ctx, c.Bucket(b.Ref.Dest.Bucket), b.Ref, obj)
	if exitcode.Of(err) == exitcode.Verify {
		b.Problem = err.Error()
		return nil
	}
	if err != nil {
		return err
	}
	b.Manifest = m
	for _, f := range m.Files {
		if _, elsewhere := m.Locations[f.Name]; elsewhere {
			continue
		}
		switch o := b.Objects[f.Name]; {
		case o == nil:
			b.Problem = f.Name + " is missing"
		case o.Size != f.Size:
			b.Problem = fmt.Sprintf("%s is %d bytes, %s says %d", f.Name, o.Size, manifest.FileName, f.Size)
		}
	}
	b.Complete = b.Problem == ""
	return nil
}

// ErrNoBackup is returned by Latest when there is no complete backup.
var ErrNoBackup = errors.New("no complete backup")

// Latest returns the newest complete backup below dest, of the given
// cluster or, when clusterID is empty, of the only cluster there.
func (c *Client) Latest(ctx context.Context, dest store.URL, clusterID string) (*Backup, error) {
	backups, err := c.List(ctx, dest)
	if err != nil {
		return nil, err
	}
	var clusters []string
	var latest *Backup
	for _, b := range backups {
		if !b.Complete || (clusterID != "" && b.Ref.ClusterID != clusterID) {
			continue
		}
		if !slices.Contains(clusters, b.Ref.ClusterID) {
			clusters = append(clusters, b.Ref.ClusterID)
		}
		if latest == nil {
			latest = b
		}
	}
	switch {
	case len(clusters) > 1:
		slices.Sort(clusters)
		return nil, usage(fmt.Errorf("%s holds backups of several clusters (%s): choose one with --cluster-id", dest, strings.Join(clusters, ", ")))
	case latest == nil && clusterID != "":
		return nil, fmt.Errorf("%w of cluster %s below %s", ErrNoBackup, clusterID, dest)
	case latest == nil:
		return nil, fmt.Errorf("%w below %s (give the prefix used for upload, without the cluster ID)", ErrNoBackup, dest)
	}
	return latest, nil
}
