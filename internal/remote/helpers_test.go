package remote_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

const (
	bucket      = "backups"
	otherBucket = "secrets"
)

func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// localBackup takes a real backup of a real etcd member and verifies it.
func localBackup(t *testing.T) (string, *manifest.Backup) {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{Keys: 200})
	dir := filepath.Join(t.TempDir(), "backup")
	_, err := backup.Save(t.Context(), backup.Options{
		Dir: dir, HostRoot: c.HostRoot, NodeName: c.NodeName,
		MinClusterAge: 24 * time.Hour, RequestTimeout: 10 * time.Second,
		WaitTimeout: time.Minute, PollInterval: time.Second, ProgressInterval: time.Second, StallTimeout: time.Minute,
		Log: logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := verify.Dir(t.Context(), dir, verify.Options{Log: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return dir, b
}

// client returns a remote client talking to host with short retries.
func client(t *testing.T, host string) *remote.Client {
	t.Helper()
	return clientWith(t, gcs.Options{EmulatorHost: host})
}

// clientWith returns a remote client with o and short retries.
func clientWith(t *testing.T, o gcs.Options) *remote.Client {
	t.Helper()
	o.RetryDeadline, o.RetryInitial, o.RetryMax = time.Second, time.Millisecond, 10*time.Millisecond
	c, err := gcs.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &remote.Client{
		Bucket:           func(name string) remote.Store { return c.Bucket(name) },
		Log:              logger(t),
		ProgressInterval: time.Second,
	}
}

func mustURL(t *testing.T, s string) store.URL {
	t.Helper()
	u, err := store.ParseURL(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// crafted describes a backup written straight into the emulator, as upload
// would have written it, without an etcd behind it.
type crafted struct {
	prefix, cluster string
	at              time.Time // backup time
	tool            string    // default "etcd-backup"
	noManifest      bool      // an interrupted upload
	created         time.Time // objects' creation time; default: at
	foreignData     bool      // data objects without upload's metadata (copied by another tool)
	resourcesTo     string    // bucket/prefix of the archive, if elsewhere
}

func (c crafted) ref(t *testing.T) remote.Ref {
	return remote.Ref{Dest: mustURL(t, "gs://"+bucket+"/"+c.prefix), ClusterID: c.cluster, Timestamp: c.at.UTC().Format(manifest.TimestampLayout)}
}

// craft writes c into srv and returns its manifest.
func craft(t *testing.T, srv *gcstest.Server, c crafted) *manifest.Backup {
	t.Helper()
	ts := c.at.UTC().Format(manifest.TimestampLayout)
	if c.tool == "" {
		c.tool = "etcd-backup"
	}
	if c.created.IsZero() {
		c.created = c.at
	}
	b := &manifest.Backup{
		SchemaVersion: manifest.SchemaVersion,
		Tool:          manifest.Tool{Name: c.tool, Version: "test"},
		CreatedAt:     c.at.UTC(),
		Timestamp:     ts,
		Cluster:       manifest.Cluster{ID: c.cluster, Version: "4.18.12", Platform: "openshift"},
		Etcd:          manifest.Etcd{ClusterID: "abc", Revision: 42},
	}
	dir := c.prefix + "/" + c.cluster + "/" + ts + "/"
	for _, f := range []struct{ kind, name string }{
		{manifest.KindSnapshot, manifest.SnapshotName(ts, false)},
		{manifest.KindResources, manifest.ResourcesName(ts, false)},
	} {
		content := []byte(f.name + " content")
		mf := fileOf(f.name, content)
		mf.Kind, mf.Mode = f.kind, "0600"
		b.Files = append(b.Files, mf)
		bkt, name := bucket, dir+f.name
		if f.kind == manifest.KindResources && c.resourcesTo != "" {
			bkt, name = otherBucket, c.resourcesTo+"/"+c.cluster+"/"+ts+"/"+f.name
			b.Locations = map[string]string{f.name: "gs://" + bkt + "/" + name}
		}
		meta := metadata(mf.SHA256)
		if c.foreignData {
			meta = nil
		}
		put(srv, bkt, name, content, meta, c.created)
	}
	if !c.noManifest {
		data, err := manifest.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		put(srv, bucket, dir+manifest.FileName, data, metadata(fileOf("", data).SHA256), c.created)
	}
	return b
}

func fileOf(name string, data []byte) manifest.File {
	sum := sha256.Sum256(data)
	return manifest.File{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), CRC32C: crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))}
}

func metadata(sha string) map[string]string {
	return map[string]string{remote.MetaSHA256: sha, remote.MetaWrittenBy: "etcd-backup test", remote.MetaRevision: strconv.Itoa(42)}
}

func put(srv *gcstest.Server, bkt, name string, content []byte, meta map[string]string, created time.Time) {
	srv.CreateObject(fakestorage.Object{
		ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bkt, Name: name, Metadata: meta, Created: created, Updated: created},
		Content:     bytes.Clone(content),
	})
}

func exists(srv *gcstest.Server, bkt, name string) bool {
	_, err := srv.GetObject(bkt, name)
	return err == nil
}

// objects lists every object name in bkt.
func objects(t *testing.T, srv *gcstest.Server, bkt string) []string {
	t.Helper()
	attrs, err := srv.Objects(bkt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range attrs {
		names = append(names, a.Name)
	}
	return names
}

// uploaded is what the tests look at of a backup upload stored.
type uploaded struct {
	Ref                                    remote.Ref
	SnapshotURI, ResourcesURI, ManifestURI string
	// Manifest is the backup.json stored: the local one plus Locations.
	Manifest *manifest.Backup
}

// destOf is the gs:// prefix u on c as a destination.
func destOf(c *remote.Client, u store.URL, o remote.UploadOptions) *remote.Dest {
	return remote.NewDest(c, u, o, func() error { return nil })
}

// nameOf is ref's name below its destination.
func nameOf(ref remote.Ref) string { return strings.TrimPrefix(ref.String(), ref.Dest.String()+"/") }

// upload stores the backup in dir below u through the destination seam,
// as the upload command does.
func upload(ctx context.Context, c *remote.Client, dir string, u store.URL, o remote.UploadOptions) (*uploaded, error) {
	d := destOf(c, u, o)
	res, err := destination.UploadDir(ctx, d, dir, nil)
	if err != nil {
		return nil, err
	}
	ref, err := remote.ParseRef(res.URL)
	if err != nil {
		return nil, err
	}
	s, err := d.Open(ctx, res.Name)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b := s.Manifest()
	return &uploaded{
		Ref:          ref,
		SnapshotURI:  res.Files[b.File(manifest.KindSnapshot).Name],
		ResourcesURI: res.Files[b.File(manifest.KindResources).Name],
		ManifestURI:  res.Files[manifest.FileName],
		Manifest:     b,
	}, nil
}

func verifyRef(ctx context.Context, c *remote.Client, ref remote.Ref, o verify.Options) (*manifest.Backup, error) {
	return destination.Verify(ctx, destOf(c, ref.Dest, remote.UploadOptions{}), nameOf(ref), o, nil)
}

func download(ctx context.Context, c *remote.Client, ref remote.Ref, dir string) (*manifest.Backup, error) {
	return destination.Download(ctx, destOf(c, ref.Dest, remote.UploadOptions{}), nameOf(ref), dir, nil)
}

func newest(ctx context.Context, c *remote.Client, u store.URL, cluster string) (destination.Entry, error) {
	found, err := destination.Newest(ctx, destOf(c, u, remote.UploadOptions{}), cluster, c.Log)
	if err != nil {
		return destination.Entry{}, err
	}
	return found.Complete[0], nil
}
