package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/verify"
	"github.com/etcd-backup/etcd-backup/internal/version"
)

// UploadOptions configure Upload.
type UploadOptions struct {
	// ResourcesTo, if set, is the prefix the static resources archive goes
	// below instead of Dest (it holds the etcd encryption keys, which may
	// belong in a bucket with narrower access); backup.json records where.
	ResourcesTo *store.URL
	// KMSKey names the Cloud KMS key that encrypts every object (CMEK).
	KMSKey string
}

// Uploaded is a backup committed at a destination.
type Uploaded struct {
	Ref Ref
	// Manifest is the backup.json uploaded: the local one plus Locations.
	Manifest                               *manifest.Backup
	SnapshotURI, ResourcesURI, ManifestURI string
}

// Upload copies the backup in dir, described by b, below dest: the data
// files first, then backup.json, so that the backup is complete only once
// everything is there. b is dir's backup.json, checked against what dir
// holds (verify.Listing). A corrupt backup is never shipped: the snapshot's
// structure is checked first, and each file as verify does while it is
// sent, abandoned before it is committed if it fails; every object is sent
// with the CRC32C that b records, so that the service refuses one that
// changed on the way.
//
// Nothing is overwritten. An object that already holds the same content (an
// earlier run of the same upload) is kept and not sent again; one that holds
// anything else is an error. If Upload fails or ctx ends, the object being
// sent is abandoned, those this run created are removed, and backup.json is
// not written.
func (c *Client) Upload(ctx context.Context, dir string, b *manifest.Backup, dest store.URL, o UploadOptions) (_ *Uploaded, err error) {
	ref := refOf(dest, b)
	if err := checkClusterID(ref.ClusterID); err != nil {
		return nil, failed("%s: %w", filepath.Join(dir, manifest.FileName), err)
	}
	buckets := []store.URL{dest}
	if o.ResourcesTo != nil {
		buckets = append(buckets, *o.ResourcesTo)
	}
	if err := c.checkBuckets(ctx, buckets...); err != nil {
		return nil, err
	}
	// The snapshot's structure needs the whole file: it is checked before
	// anything is sent.
	if err := verify.Snapshot(ctx, filepath.Join(dir, b.File(manifest.KindSnapshot).Name), b); err != nil {
		return nil, fmt.Errorf("refusing to upload %s: %w", dir, err)
	}
	up := *b
	up.Locations = maps.Clone(b.Locations)
	if o.ResourcesTo != nil && *o.ResourcesTo != dest {
		res := b.File(manifest.KindResources)
		if up.Locations == nil {
			up.Locations = map[string]string{}
		}
		up.Locations[res.Name] = o.ResourcesTo.Join(ref.ClusterID, ref.dir(), res.Name).String()
	}
	data, err := manifest.Marshal(&up)
	if err != nil {
		return nil, err
	}
	digest := manifest.NewDigest()
	digest.Write(data)
	mf := manifest.File{Name: manifest.FileName, Size: digest.Size(), SHA256: digest.SHA256(), CRC32C: digest.CRC32C()}
	mloc := location{store: c.Bucket(dest.Bucket), url: ref.URL().Join(manifest.FileName)}
	// A backup.json already there must be this one, or nothing is sent.
	switch existing, err := mloc.store.Attrs(ctx, mloc.url.Path); {
	case err == nil:
		if err := same(mloc, existing, mf); err != nil {
			return nil, err
		}
	case !errors.Is(err, store.ErrNotExist):
		return nil, err
	}

	out := &Uploaded{Ref: ref, Manifest: &up, ManifestURI: mloc.url.String()}
	var sent []sentObject
	defer func() {
		if err != nil {
			c.removeSent(ctx, sent)
		}
	}()
	// The archive first: it is small, so a wrong bucket or missing role
	// shows before the snapshot is sent.
	for _, kind := range []string{manifest.KindResources, manifest.KindSnapshot} {
		f := *b.File(kind)
		loc, err := c.locate(ref, &up, f)
		if err != nil {
			return nil, err
		}
		obj, err := c.putFile(ctx, loc, filepath.Join(dir, f.Name), b, f, o.KMSKey)
		if err != nil {
			return nil, err
		}
		if obj != nil {
			sent = append(sent, sentObject{loc, obj.Generation})
		}
		if kind == manifest.KindSnapshot {
			out.SnapshotURI = loc.url.String()
		} else {
			out.ResourcesURI = loc.url.String()
		}
	}
	if _, err := c.put(ctx, mloc, bytes.NewReader(data), mf, "application/json", c.metadata(b, mf.SHA256), o.KMSKey); err != nil {
		return nil, err
	}
	c.Log.Info("backup uploaded", "backup", ref.String())
	return out, nil
}

func (c *Client) metadata(b *manifest.Backup, sha string) map[string]string {
	return map[string]string{
		MetaSHA256:         sha,
		MetaRevision:       strconv.FormatInt(b.Etcd.Revision, 10),
		MetaClusterVersion: b.Cluster.Version,
		MetaClusterID:      b.ClusterKey(),
		MetaWrittenBy:      manifest.ToolName + " " + version.Get().Version,
	}
}

// sentObject is an object this run created.
type sentObject struct {
	loc        location
	generation int64
}

// removeSent deletes the objects a failed upload created, even once ctx has
// ended (a signal), within a bound of its own. What cannot be removed is a
// leftover without backup.json, which list shows as incomplete and prune
// removes after a day.
func (c *Client) removeSent(ctx context.Context, sent []sentObject) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer cancel()
	for _, s := range sent {
		if err := s.loc.store.Delete(ctx, s.loc.url.Path, s.generation); err != nil {
			c.Log.Warn("could not remove an object of the failed upload; prune removes it after a day", "object", s.loc.url.String(), "err", err)
			continue
		}
		c.Log.Info("removed " + s.loc.url.String() + ": the upload failed")
	}
}

// removeTimeout bounds the clean-up of a failed upload, which may run after
// a SIGTERM, inside the grace period before the SIGKILL.
const removeTimeout = 10 * time.Second

// putFile uploads the local file path, which backup.json describes as f,
// checking it as it goes. It returns the object created, or nil if the
// same content was already there.
func (c *Client) putFile(ctx context.Context, loc location, path string, b *manifest.Backup, f manifest.File, kmsKey string) (*store.Object, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer file.Close()
	contentType := "application/octet-stream"
	if f.Kind == manifest.KindResources {
		contentType = "application/gzip"
	}
	m := progress.Start(ctx, c.Log, "uploading "+f.Name, f.Size, c.ProgressInterval)
	defer m.Stop()
	checked := &checkedFile{ctx: ctx, file: file, b: b, f: f, meter: m, log: c.Log}
	checked.open()
	defer checked.Close()
	obj, err := c.put(ctx, loc, checked, f, contentType, c.metadata(b, f.SHA256), kmsKey)
	if exitcode.Of(err) == exitcode.Verify {
		return nil, fmt.Errorf("refusing to upload %s, which fails verification: %w", path, err)
	}
	return obj, err
}

// checkedFile reads a file of a backup through verify.NewReader. Seeking
// back to its start, to send it again after a transient error, starts the
// check again too.
type checkedFile struct {
	ctx   context.Context
	file  *os.File
	b     *manifest.Backup
	f     manifest.File
	meter *progress.Meter
	log   *slog.Logger
	*verify.Reader
}

func (c *checkedFile) open() {
	c.Reader = verify.NewReader(c.ctx, io.TeeReader(c.file, c.meter), c.b, c.f)
}

// Seek supports only going back to the start.
func (c *checkedFile) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, errors.New("a checked file can only go back to its start")
	}
	c.Reader.Close()
	if _, err := c.file.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("rewind %s: %w", c.file.Name(), err)
	}
	c.log.Warn("sending " + c.f.Name + " again from its start after a transient error")
	c.meter.Restart()
	c.open()
	return 0, nil
}

// put creates loc from r unless an object with f's content is already there.
// It returns the object created, or nil if it was already there.
func (c *Client) put(ctx context.Context, loc location, r io.ReadSeeker, f manifest.File, contentType string, meta map[string]string, kmsKey string) (*store.Object, error) {
	name := loc.url.Path
	switch existing, err := loc.store.Attrs(ctx, name); {
	case err == nil:
		return nil, c.alreadyThere(loc, existing, f)
	case !errors.Is(err, store.ErrNotExist):
		return nil, err
	}
	obj, err := loc.store.Put(ctx, name, r, store.PutOptions{
		Size:        f.Size,
		CRC32C:      f.CRC32C,
		ContentType: contentType,
		Metadata:    meta,
		KMSKey:      kmsKey,
	})
	if errors.Is(err, store.ErrExist) {
		// Another run got there first, or a retried request of this one
		// landed twice: which, the content says.
		existing, aerr := loc.store.Attrs(ctx, name)
		if aerr != nil {
			return nil, errors.Join(err, aerr)
		}
		return nil, c.alreadyThere(loc, existing, f)
	}
	if err != nil {
		return nil, err
	}
	c.Log.Info("uploaded "+loc.url.String(), "size", obj.Size, "crc32c", fmt.Sprintf("%08x", obj.CRC32C))
	return obj, nil
}

// alreadyThere accepts an existing object that holds exactly f.
func (c *Client) alreadyThere(loc location, obj *store.Object, f manifest.File) error {
	if err := same(loc, obj, f); err != nil {
		return err
	}
	c.Log.Info("already uploaded, not sent again: "+loc.url.String(), "sha256", f.SHA256)
	return nil
}

// same says whether obj holds f, by the checksums upload records. One that
// does not is a clash that no retry can resolve: names carry the
// snapshot's digest, so another backup of this cluster never has this
// name, and the object is someone else's (exit 2, as for a wrong DEST).
func same(loc location, obj *store.Object, f manifest.File) error {
	if obj.Metadata[MetaSHA256] != f.SHA256 || obj.Size != f.Size || obj.CRC32C != f.CRC32C {
		return usage(fmt.Errorf("%s already exists with other content (%d bytes, sha256 %q, crc32c %08x; this backup has %d bytes, sha256 %s, crc32c %08x): nothing was overwritten; not retryable: remove that object or upload to another prefix",
			loc.url, obj.Size, obj.Metadata[MetaSHA256], obj.CRC32C, f.Size, f.SHA256, f.CRC32C))
	}
	return nil
}
