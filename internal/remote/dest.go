package remote

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/store"
)

// Dest is a gs://bucket/prefix as a destination: backups below it are
// named <cluster-id>/<ts>-<sha>.
type Dest struct {
	c           *Client
	url         store.URL
	kmsKey      string
	resourcesTo *store.URL
	close       func() error
}

var (
	_ destination.Dest   = (*Dest)(nil)
	_ destination.Pruner = (*Dest)(nil)
	_ destination.Hinter = (*Dest)(nil)
)

// NewDest returns the destination url on c; close releases c.
func NewDest(c *Client, url store.URL, o UploadOptions, close func() error) *Dest {
	return &Dest{c: c, url: url, kmsKey: o.KMSKey, resourcesTo: o.ResourcesTo, close: close}
}

// Kind names the destination in errors.
func (d *Dest) Kind() string { return "Cloud Storage" }

// URL is the prefix.
func (d *Dest) URL() string { return d.url.String() }

// Close releases the client.
func (d *Dest) Close() error { return d.close() }

// ref names the backup name (<cluster-id>/<ts>-<sha>) below d.
func (d *Dest) ref(name string) (Ref, error) {
	return ParseRef(d.url.Join(strings.Split(name, "/")...).String())
}

func nameOf(r Ref) string { return r.ClusterID + "/" + r.dir() }

// Begin checks the buckets and that the backup's name is free or holds
// this very backup (a re-run, which then sends nothing).
func (d *Dest) Begin(ctx context.Context, b *manifest.Backup) (destination.Upload, error) {
	ref := refOf(d.url, b)
	if err := checkClusterID(ref.ClusterID); err != nil {
		return nil, failed("%s: %w", manifest.FileName, err)
	}
	buckets := []store.URL{d.url}
	if d.resourcesTo != nil {
		buckets = append(buckets, *d.resourcesTo)
	}
	if err := d.c.checkBuckets(ctx, buckets...); err != nil {
		return nil, err
	}
	up := *b
	up.Locations = maps.Clone(b.Locations)
	if d.resourcesTo != nil && *d.resourcesTo != d.url {
		res := b.File(manifest.KindResources)
		if up.Locations == nil {
			up.Locations = map[string]string{}
		}
		up.Locations[res.Name] = d.resourcesTo.Join(ref.ClusterID, ref.dir(), res.Name).String()
	}
	mloc := location{store: d.c.Bucket(d.url.Bucket), url: ref.URL().Join(manifest.FileName)}
	u := &gcsUpload{d: d, ref: ref, b: b, locations: up.Locations, mloc: mloc, files: map[string]string{}}
	// A backup.json already there must describe this backup, or nothing
	// is sent.
	switch existing, err := mloc.store.Attrs(ctx, mloc.url.Path); {
	case err == nil:
		stored, err := d.c.parseManifest(ctx, mloc.store, ref, existing)
		if err != nil {
			return nil, err
		}
		if !manifest.SameBackup(stored, b) || !maps.Equal(stored.Locations, up.Locations) {
			return nil, usage(fmt.Errorf("%s: %s already exists with other content (another backup, or this one stored otherwise: encrypted to other keys, its archive elsewhere): nothing was overwritten; not retryable: remove it or upload to another prefix", ref, manifest.FileName))
		}
		d.c.Log.Info("already uploaded, not sent again: " + ref.String())
		u.done = stored
	case !errors.Is(err, store.ErrNotExist):
		return nil, err
	}
	return u, nil
}

type gcsUpload struct {
	d   *Dest
	ref Ref
	b   *manifest.Backup // as begun
	// locations are where files go that do not sit next to backup.json.
	locations map[string]string
	mloc      location
	// done is the backup stored before; committed: by this upload.
	done      *manifest.Backup
	committed bool
	// mu makes Puts go one at a time. A send cut short by another file's
	// failure could be cut just as the service creates its object, whose
	// generation it would then not learn, and could not remove: one at a
	// time, a failed file stops the upload before the next send starts.
	mu   sync.Mutex
	sent []objectAt
	// held is every file's object, sent or found: what backup.json names.
	held  []objectAt
	files map[string]string
}

func (u *gcsUpload) Put(ctx context.Context, f manifest.File, open destination.Opener) (manifest.File, bool, error) {
	loc, err := u.d.c.locate(u.ref, &manifest.Backup{Locations: u.locations}, f)
	if err != nil {
		return f, false, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return f, false, fmt.Errorf("upload %s: %w", loc.url, context.Cause(ctx))
	}
	u.files[f.Name] = loc.url.String()
	if u.done != nil {
		if sf := u.done.File(f.Kind); sf != nil {
			return *sf, true, nil
		}
		return f, false, failed("%s lists no %s", u.ref, f.Name)
	}
	contentType := "application/octet-stream"
	if f.Kind == manifest.KindResources && f.Stored == nil {
		contentType = "application/gzip"
	}
	m := progress.Start(ctx, u.d.c.Log, "uploading "+f.Name, f.Size, u.d.c.ProgressInterval)
	defer m.Stop()
	r := &reopener{open: open, meter: m}
	defer r.Close()
	want := f
	meta := u.d.c.metadata(u.b, f.SHA256)
	if destination.Sealed(f) {
		// The bytes are new on every send: r checksums each one, and the
		// service's report is compared with the last.
		r.sent = manifest.NewChecksum()
		want = manifest.File{Name: f.Name, Kind: f.Kind, Size: -1, SHA256: f.SHA256}
		meta[MetaEncryptedTo] = keysFingerprint(f.Stored.Recipients)
	}
	obj, found, err := u.d.c.put(ctx, loc, r, want, contentType, meta, u.d.kmsKey)
	if err != nil {
		return f, false, err
	}
	u.held = append(u.held, objectAt{loc, obj.Generation})
	switch {
	case found && r.sent != nil:
		// Stored by an earlier run of this upload, stopped before its
		// commit: its record is what the service holds.
		st := *f.Stored
		st.Size, st.CRC32C = obj.Size, obj.CRC32C
		f.Stored = &st
		return f, true, nil
	case found:
		return f, true, nil
	}
	u.sent = append(u.sent, objectAt{loc, obj.Generation})
	if r.sent == nil {
		return f, false, nil
	}
	if obj.Size != r.sent.Size() || obj.CRC32C != r.sent.CRC32C() {
		return f, false, exitcode.With(exitcode.Verify, fmt.Errorf("%s: the service stored %d bytes with CRC32C %08x, %d bytes with CRC32C %08x were sent", loc.url, obj.Size, obj.CRC32C, r.sent.Size(), r.sent.CRC32C()))
	}
	st := *f.Stored
	st.Size, st.SHA256, st.CRC32C = r.sent.Size(), r.sent.SHA256(), r.sent.CRC32C()
	f.Stored = &st
	return f, false, nil
}

// Commit writes backup.json, which makes the backup complete.
func (u *gcsUpload) Commit(ctx context.Context, b *manifest.Backup) (destination.Result, error) {
	u.files[manifest.FileName] = u.mloc.url.String()
	res := destination.Result{Name: nameOf(u.ref), URL: u.ref.String(), Files: u.files}
	if u.done != nil {
		return res, nil
	}
	for _, f := range b.Files {
		if _, ok := u.files[f.Name]; !ok {
			return res, fmt.Errorf("commit %s: %s was not stored", u.ref, f.Name)
		}
	}
	up := *b
	up.Locations = u.locations
	data, err := manifest.Marshal(&up)
	if err != nil {
		return res, err
	}
	digest := manifest.NewDigest()
	digest.Write(data)
	mf := manifest.File{Name: manifest.FileName, Size: digest.Size(), SHA256: digest.SHA256(), CRC32C: digest.CRC32C()}
	obj, found, err := u.d.c.put(ctx, u.mloc, bytes.NewReader(data), mf, "application/json", u.d.c.metadata(u.b, mf.SHA256), u.d.kmsKey)
	if err != nil {
		return res, err
	}
	if !found {
		// Until the files are found intact, backup.json is what Close
		// removes first.
		u.sent = append([]objectAt{{u.mloc, obj.Generation}}, u.sent...)
	}
	if err := u.intact(ctx); err != nil {
		return res, err
	}
	u.committed = true
	u.d.c.Log.Info("backup uploaded", "backup", u.ref.String())
	return res, nil
}

// intact checks that every file backup.json names is still the object this
// upload stored or found. A prune on a machine whose clock runs a day or
// more ahead takes an upload in progress for the leftover of one that was
// interrupted, and deletes what it has stored so far; so may a hand or a
// lifecycle rule. backup.json would then name files that are gone, and
// the upload would report a backup that cannot be restored.
func (u *gcsUpload) intact(ctx context.Context) error {
	for _, h := range u.held {
		obj, err := h.loc.store.Attrs(ctx, h.loc.url.Path)
		switch {
		case errors.Is(err, store.ErrNotExist):
			return fmt.Errorf("commit %s: %s was deleted while the upload ran (by hand, a lifecycle rule, or a prune on a machine whose clock is a day or more ahead): the upload removes what it stored; run it again", u.ref, h.loc.url)
		case err != nil:
			return fmt.Errorf("commit %s: %w", u.ref, err)
		case obj.Generation != h.generation:
			return fmt.Errorf("commit %s: %s was replaced while the upload ran: the upload removes what it stored; run it again", u.ref, h.loc.url)
		}
	}
	return nil
}

// Close removes what an upload that did not commit sent.
func (u *gcsUpload) Close() error {
	if !u.committed && len(u.sent) > 0 {
		u.d.c.removeSent(context.Background(), u.sent)
	}
	return nil
}

// reopener is an Opener as the io.ReadSeeker a put takes: seeking back to
// the start, to send again after a transient error, opens it again.
type reopener struct {
	open  destination.Opener
	meter *progress.Meter
	r     io.ReadCloser
	// sent, when set, digests what the current send has read.
	sent *manifest.Digest
}

func (o *reopener) Read(p []byte) (int, error) {
	if o.r == nil {
		r, err := o.open()
		if err != nil {
			return 0, err
		}
		o.r = r
	}
	n, err := o.r.Read(p)
	o.meter.Write(p[:n])
	if o.sent != nil {
		o.sent.Write(p[:n])
	}
	return n, err
}

func (o *reopener) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, errors.New("an upload can only go back to its start")
	}
	if o.r != nil {
		o.meter.Restart()
	}
	if o.sent != nil {
		o.sent = manifest.NewChecksum()
	}
	return 0, o.Close()
}

func (o *reopener) Close() error {
	if o.r == nil {
		return nil
	}
	err := o.r.Close()
	o.r = nil
	return err
}

// List returns the backups below the prefix, oldest first.
func (d *Dest) List(ctx context.Context) ([]destination.Entry, error) {
	backups, err := d.c.List(ctx, d.url)
	if err != nil {
		return nil, err
	}
	out := make([]destination.Entry, 0, len(backups))
	for _, b := range backups {
		out = append(out, entry(b))
	}
	slices.SortStableFunc(out, destination.Compare)
	return out, nil
}

func entry(b *Backup) destination.Entry {
	return destination.Entry{
		Name:      nameOf(b.Ref),
		URL:       b.Ref.String(),
		ClusterID: b.Ref.ClusterID,
		Timestamp: b.Ref.Timestamp,
		Created:   cmp.Or(b.Committed(), b.Time),
		State:     destination.State(b.State),
		Problem:   b.Problem,
		Ours:      b.Manifest != nil && b.Manifest.Tool.Name == manifest.ToolName,
		Manifest:  b.Manifest,
	}
}

// Nearby says what is below the prefix where there is no backup.
func (d *Dest) Nearby(ctx context.Context) (string, error) { return d.c.Nearby(ctx, d.url) }

// Open reads the backup.json of backup name. A name that holds no backup
// is a usage error naming the nearest backups.
func (d *Dest) Open(ctx context.Context, name string) (destination.Stored, error) {
	ref, err := d.ref(name)
	if err != nil {
		return nil, err
	}
	b, obj, err := d.c.readManifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	r, err := d.c.Bucket(ref.Dest.Bucket).Open(ctx, obj.Name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	raw, err := io.ReadAll(io.LimitReader(r, maxManifest))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref.URL().Join(manifest.FileName), err)
	}
	// The backup.json a download writes is the local one: where the
	// upload sent the archive is not part of the backup.
	if len(b.Locations) > 0 {
		local := *b
		local.Locations = nil
		if raw, err = manifest.Marshal(&local); err != nil {
			return nil, err
		}
	}
	return &storedBackup{d: d, ref: ref, b: b, raw: raw}, nil
}

// maxManifest bounds what is read of a backup.json.
const maxManifest = 1 << 20

type storedBackup struct {
	d   *Dest
	ref Ref
	b   *manifest.Backup
	raw []byte
}

func (s *storedBackup) Manifest() *manifest.Backup { return s.b }
func (s *storedBackup) Raw() []byte                { return s.raw }
func (s *storedBackup) Close() error               { return nil }

// Open streams the object of f; a missing one makes the backup incomplete.
func (s *storedBackup) Open(ctx context.Context, f manifest.File) (io.ReadCloser, error) {
	loc, err := s.d.c.locate(s.ref, s.b, f)
	if err != nil {
		return nil, err
	}
	r, err := loc.store.Open(ctx, loc.url.Path)
	if errors.Is(err, store.ErrNotExist) {
		return nil, failed("%s is missing: the backup is incomplete", loc.url)
	}
	if err != nil {
		return nil, err
	}
	m := progress.Start(ctx, s.d.c.Log, "reading "+loc.url.String(), f.Content().Size, s.d.c.ProgressInterval)
	return &objectReader{r: r, meter: m}, nil
}

// objectReader logs a download's progress, and makes bytes the service
// holds in another form than it recorded (a CRC32C mismatch on read) a
// failed verification, not a failed transfer.
type objectReader struct {
	r     io.ReadCloser
	meter *progress.Meter
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.meter.Write(p[:n])
	if errors.Is(err, store.ErrCorrupt) {
		err = exitcode.With(exitcode.Verify, err)
	}
	return n, err
}

func (o *objectReader) Close() error {
	o.meter.Stop()
	return o.r.Close()
}

// Delete removes backup name, backup.json first, if this tool wrote every
// object of it and none is under a hold or retention.
func (d *Dest) Delete(ctx context.Context, name string) error {
	ref, err := d.ref(name)
	if err != nil {
		return err
	}
	backups, err := d.c.List(ctx, d.url)
	if err != nil {
		return err
	}
	for _, b := range backups {
		if b.Ref != ref {
			continue
		}
		if b.Manifest == nil || b.Manifest.Tool.Name != manifest.ToolName {
			return usage(fmt.Errorf("%s was not written by %s: not deleted", ref, manifest.ToolName))
		}
		dec, err := d.c.remove(ctx, Decision{Backup: b, Action: destination.Remove}, d.c.now(), false)
		if err != nil {
			return err
		}
		if dec.Action == destination.Skip {
			return fmt.Errorf("%s not deleted: %s", ref, strings.TrimPrefix(dec.Reason, ", but "))
		}
		return nil
	}
	return usage(fmt.Errorf("%w %s", destination.ErrNoSuchBackup, ref))
}

// Prune applies the policy with Cloud Storage's own rules: holds and
// retention are respected, and leftovers of interrupted uploads go once a
// day old.
func (d *Dest) Prune(ctx context.Context, p destination.Policy, cluster string, dryRun bool) ([]destination.Decision, error) {
	decisions, err := d.c.Prune(ctx, d.url, PruneOptions{Policy: p, ClusterID: cluster, DryRun: dryRun})
	out := make([]destination.Decision, 0, len(decisions))
	for _, dec := range decisions {
		out = append(out, destination.Decision{Entry: entry(dec.Backup), Action: dec.Action, Reason: dec.Reason})
	}
	return out, err
}
