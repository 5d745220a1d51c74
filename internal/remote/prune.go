package remote

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/store"
)

// LeftoverAge is how old every object of an incomplete backup must be before
// Prune removes it: younger, its upload may still be running.
const LeftoverAge = 24 * time.Hour

// PruneOptions configure Prune.
type PruneOptions struct {
	destination.Policy
	// ClusterID limits pruning to one cluster's backups; empty means all.
	ClusterID string
	// DryRun decides and checks everything but deletes nothing.
	DryRun bool
}

// Decision is what Prune did, or with DryRun would do, with one backup.
type Decision struct {
	Backup *Backup
	Action destination.Action
	Reason string
}

// Prune applies the retention policy to the backups below dest. It removes
// only complete backups whose backup.json says etcd-backup wrote them, and
// whose every object carries the checksum this program uploaded it with;
// never the newest complete backup of a cluster; and leftovers of
// interrupted uploads once every object is LeftoverAge old. An object under
// a hold or retention makes its backup skipped, with a note. backup.json is
// deleted first, so a backup pruned halfway reads as incomplete, never as
// complete with missing files.
func (c *Client) Prune(ctx context.Context, dest store.URL, o PruneOptions) ([]Decision, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	backups, err := c.List(ctx, dest)
	if err != nil {
		return nil, err
	}
	now := c.now()
	var out []Decision
	guard := destination.NewGuard(now)
	ours := map[string]int{}
	for _, b := range backups {
		if o.ClusterID != "" && b.Ref.ClusterID != o.ClusterID {
			continue
		}
		d := decide(b, o.Policy, now, guard, ours)
		if d.Action == destination.Remove {
			d, err = c.remove(ctx, d, now, o.DryRun)
			if err != nil {
				return out, err
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// decide applies the policy to b; backups come newest first, guard keeps
// what must be kept, and ours counts, per cluster, this program's complete
// backups seen.
func decide(b *Backup, p destination.Policy, now time.Time, guard *destination.Guard, ours map[string]int) Decision {
	keep := func(reason string) Decision { return Decision{Backup: b, Action: destination.Keep, Reason: reason} }
	cluster := b.Ref.ClusterID
	switch {
	case b.State != Complete && b.Objects[manifest.FileName] != nil:
		return keep(string(b.State) + " (" + b.Problem + "); left for an operator")
	case b.State != Complete:
		return decideLeftover(b, now)
	case b.Manifest.Tool.Name == manifest.ToolName:
		ours[cluster]++
	}
	if why := guard.Keeps(cluster, b.Time, b.Manifest.Dirty); why != "" {
		return keep(why)
	}
	switch {
	case b.Manifest.Tool.Name != manifest.ToolName:
		return keep(fmt.Sprintf("written by %q, not %s", b.Manifest.Tool.Name, manifest.ToolName))
	case nameOf(b.Ref) == p.Stored:
		return keep(destination.StoredReason)
	case p.KeepLast > 0 && ours[cluster] <= p.KeepLast:
		return keep(fmt.Sprintf("one of the newest %d (--keep-last)", p.KeepLast))
	case p.KeepWithin > 0 && now.Sub(b.Time) < p.KeepWithin:
		return keep(fmt.Sprintf("younger than %s (--keep-within)", p.KeepWithin))
	}
	return Decision{Backup: b, Action: destination.Remove, Reason: "outside the retention policy"}
}

func decideLeftover(b *Backup, now time.Time) Decision {
	mine := 0
	for _, obj := range b.Objects {
		if !writtenByUs(obj) {
			continue
		}
		mine++
		if now.Sub(obj.Created) < LeftoverAge {
			return Decision{Backup: b, Action: destination.Keep, Reason: "incomplete, less than a day old: its upload may be running"}
		}
	}
	if mine == 0 {
		return Decision{Backup: b, Action: destination.Keep, Reason: "incomplete, and holds no object etcd-backup wrote"}
	}
	return Decision{Backup: b, Action: destination.Remove, Reason: "leftover of an interrupted upload, older than a day"}
}

func writtenByUs(obj *store.Object) bool {
	w := obj.Metadata[MetaWrittenBy]
	return w == manifest.ToolName || strings.HasPrefix(w, manifest.ToolName+" ")
}

// target is one object Prune deletes.
type target struct {
	store Store
	obj   *store.Object
	url   string
}

// remove deletes the backup d decided to remove, after checking that every
// object is this program's and deletable; any doubt turns it into a Skip.
func (c *Client) remove(ctx context.Context, d Decision, now time.Time, dryRun bool) (Decision, error) {
	targets, why, err := c.targets(ctx, d.Backup)
	if err != nil {
		return d, err
	}
	for _, t := range targets {
		if p := t.obj.Protected(now); p != "" && why == "" {
			why = t.url + " is " + p
		}
	}
	if why != "" {
		return Decision{Backup: d.Backup, Action: destination.Skip, Reason: d.Reason + ", but " + why + "; left untouched"}, nil
	}
	if dryRun {
		d.Reason += " (dry run: nothing deleted)"
		return d, nil
	}
	var left []string
	for i, t := range targets {
		err := t.store.Delete(ctx, t.obj.Name, t.obj.Generation)
		switch {
		case err == nil:
			continue
		case errors.Is(err, store.ErrPermission), errors.Is(err, store.ErrChanged):
			if i == 0 && d.Backup.State == Complete {
				// backup.json stays, so the backup stays complete and whole.
				return Decision{Backup: d.Backup, Action: destination.Skip, Reason: d.Reason + ", but deleting " + t.url + " was refused: " + err.Error()}, nil
			}
			left = append(left, fmt.Sprintf("%s (%v)", t.url, err))
		case errors.Is(err, store.ErrNotExist):
			continue
		default:
			return d, err
		}
	}
	if len(left) > 0 {
		d.Reason += "; deletion refused for " + strings.Join(left, ", ") + ": left as an incomplete backup"
	}
	return d, nil
}

// targets lists the objects of backup b to delete, backup.json first, or
// says why b must not be touched.
func (c *Client) targets(ctx context.Context, b *Backup) ([]target, string, error) {
	st := c.Bucket(b.Ref.Dest.Bucket)
	at := func(obj *store.Object) target {
		return target{store: st, obj: obj, url: store.URL{Bucket: b.Ref.Dest.Bucket, Path: obj.Name}.String()}
	}
	if b.Manifest == nil {
		// Its upload, run again, may have written backup.json since the
		// listing, which makes these objects a backup's.
		switch _, err := st.Attrs(ctx, b.Ref.object(manifest.FileName)); {
		case err == nil:
			return nil, "its upload wrote " + manifest.FileName + " while prune ran", nil
		case !errors.Is(err, store.ErrNotExist):
			return nil, "", err
		}
		var out []target
		for _, obj := range b.Objects {
			if writtenByUs(obj) {
				out = append(out, at(obj))
			}
		}
		return out, "", nil
	}
	out := []target{at(b.Objects[manifest.FileName])}
	for _, f := range b.Manifest.Files {
		loc, err := c.locate(b.Ref, b.Manifest, f)
		if err != nil {
			return nil, err.Error(), nil
		}
		obj := b.Objects[f.Name]
		if _, elsewhere := b.Manifest.Locations[f.Name]; elsewhere {
			obj, err = loc.store.Attrs(ctx, loc.url.Path)
			if errors.Is(err, store.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, "", err
			}
		}
		if obj.Metadata[MetaSHA256] != f.SHA256 || !writtenByUs(obj) {
			return nil, loc.url.String() + " was not uploaded by etcd-backup for this backup", nil
		}
		out = append(out, target{store: loc.store, obj: obj, url: loc.url.String()})
	}
	return out, "", nil
}
