package remote_test

import (
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
)

// TestGCSConformance runs the suite every destination passes against a
// gs:// prefix on the emulator.
func TestGCSConformance(t *testing.T) {
	bs := desttest.Save(t)
	srv := gcstest.New(t, bucket)
	n := 0
	desttest.Run(t, desttest.Harness{
		New: func(t *testing.T) destination.Dest {
			n++
			d := remote.NewDest(client(t, srv.Host()), mustURL(t, "gs://"+bucket+"/conformance/"+string(rune('a'+n))), remote.UploadOptions{}, func() error { return nil })
			t.Cleanup(func() { d.Close() })
			return d
		},
		// A backup.json of another tool, where one of ours would be.
		Foreign: func(t *testing.T, d destination.Dest, like *manifest.Backup) string {
			u := mustURL(t, d.URL())
			name := like.ClusterKey() + "/" + like.Timestamp + "-000000000000"
			put(srv, bucket, u.Join(name, manifest.FileName).Path, []byte("{}"), nil, time.Now())
			return name
		},
		// Other bytes of the same size, as the service reports them.
		Tamper: func(t *testing.T, res destination.Result, f manifest.File) {
			obj := mustURL(t, res.Files[f.Name]).Path
			o, err := srv.GetObject(bucket, obj)
			if err != nil {
				t.Fatal(err)
			}
			o.Content[len(o.Content)/2] ^= 0xff
			put(srv, bucket, obj, o.Content, o.Metadata, o.Created)
		},
	}, bs)
	t.Run("EncryptedChangedOnTheWay", func(t *testing.T) { testChangedOnTheWay(t, srv, bs[0]) })
}

// testChangedOnTheWay: encrypted bytes are not known before they are sent,
// so no checksum goes with them; the CRC32C the service reports of what it
// stored is compared with what was sent instead. Damage on the way is exit
// 4, and the damaged object is removed.
func testChangedOnTheWay(t *testing.T, srv *gcstest.Server, b desttest.Backup) {
	p := gcstest.NewProxy(t, srv)
	p.Add(gcstest.Fault{Match: gcstest.IsUploadData, Times: 1, Do: p.ChangeBytes()})
	url := mustURL(t, "gs://"+bucket+"/changed")
	d := remote.NewDest(client(t, p.Host()), url, remote.UploadOptions{}, func() error { return nil })
	_, err := destination.UploadDir(t.Context(), d, b.Dir, desttest.Recipients(t, desttest.AgeKey(t)))
	if exitcode.Of(err) != exitcode.Verify || !strings.Contains(err.Error(), "were sent") {
		t.Fatalf("upload with bytes changed on the way = %v (exit %d), want exit %d", err, exitcode.Of(err), exitcode.Verify)
	}
	for _, o := range objects(t, srv, bucket) {
		if strings.HasPrefix(o, url.Path+"/") {
			t.Errorf("%s left after the failed upload", o)
		}
	}
}
