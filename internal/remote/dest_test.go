package remote_test

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
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
	t.Run("EncryptedLeftoverOtherKeys", func(t *testing.T) { testLeftoverOtherKeys(t, srv, bs[0]) })
}

// testLeftoverOtherKeys: what an encrypted upload left when it was killed
// before its commit is taken by a re-run to the same keys (the suite's
// EncryptedRerunAfterKill), never by one to other keys, which would record
// keys that cannot open it: that is exit 2, and the object stays as it was.
func testLeftoverOtherKeys(t *testing.T, srv *gcstest.Server, b desttest.Backup) {
	url := mustURL(t, "gs://"+bucket+"/leftover")
	d := remote.NewDest(client(t, srv.Host()), url, remote.UploadOptions{}, func() error { return nil })
	res, err := destination.UploadDir(t.Context(), d, b.Dir, desttest.Recipients(t, desttest.AgeKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	// The commit marker gone: the files are what a killed run leaves.
	if err := srv.Client().Bucket(bucket).Object(mustURL(t, res.Files[manifest.FileName]).Path).Delete(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := objects(t, srv, bucket)
	_, err = destination.UploadDir(t.Context(), d, b.Dir, desttest.Recipients(t, desttest.AgeKey(t)))
	if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "encrypted to these keys") {
		t.Fatalf("upload to other keys over a leftover = %v (exit %d), want exit %d", err, exitcode.Of(err), exitcode.Usage)
	}
	if after := objects(t, srv, bucket); !slices.Equal(before, after) {
		t.Errorf("objects went from %v to %v", before, after)
	}
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

// TestGCSReadCutOff: a download cut off on the way, each time (the client
// resumes it until no data has come for the stall timeout), is a failed
// read, exit 1, never a corrupt backup: list would call the backup corrupt
// and download --latest pass over it for an older one.
func TestGCSReadCutOff(t *testing.T) {
	bs := desttest.Save(t)
	srv := gcstest.New(t, bucket)
	emulator, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	next := httputil.NewSingleHostReverseProxy(emulator)
	tests := []struct {
		name string
		file string
	}{
		{"backup.json", manifest.FileName},
		{"resources archive", ".tar.gz"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := gcstest.NewProxy(t, srv)
			c := clientWith(t, gcs.Options{EmulatorHost: p.Host(), StallTimeout: 200 * time.Millisecond})
			d := remote.NewDest(c, mustURL(t, fmt.Sprintf("gs://%s/cut%d", bucket, i)), remote.UploadOptions{}, func() error { return nil })
			for _, b := range bs {
				if _, err := destination.UploadDir(t.Context(), d, b.Dir, nil); err != nil {
					t.Fatal(err)
				}
			}
			p.Add(gcstest.Fault{Match: func(r *http.Request) bool {
				// Object data, not its metadata.
				return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, tt.file) && r.URL.Query().Get("alt") == "media"
			}, Do: func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(desttest.CutAfter(w, 0), r)
			}})
			entries, err := d.List(t.Context())
			for _, e := range entries {
				if e.State != destination.Complete {
					t.Errorf("list: %s %s (%s), want it complete or the listing failed", e.URL, e.State, e.Problem)
				}
			}
			if err != nil && exitcode.Of(err) != exitcode.Failure {
				t.Errorf("list: %v (exit %d), want exit %d", err, exitcode.Of(err), exitcode.Failure)
			}
			found, err := destination.Newest(t.Context(), d, "", desttest.Log(t))
			if err == nil {
				_, err = destination.LatestGood(d, found, desttest.Log(t), func(name string) (*manifest.Backup, error) {
					return destination.Download(t.Context(), d, name, filepath.Join(t.TempDir(), "down"), nil)
				})
			}
			if exitcode.Of(err) != exitcode.Failure {
				t.Errorf("download --latest with each %s cut off: %v (exit %d), want exit %d", tt.name, err, exitcode.Of(err), exitcode.Failure)
			}
			t.Log(err)
		})
	}
}

// TestGCSPermissionDenied: credentials that the bucket refuses (an IAM
// role missing, a Workload Identity binding to the wrong account) are
// configuration, exit 2, as a registry's refusal is; a retry cannot help.
func TestGCSPermissionDenied(t *testing.T) {
	bs := desttest.Save(t)
	srv := gcstest.New(t, bucket)
	p := gcstest.NewProxy(t, srv)
	d := remote.NewDest(client(t, p.Host()), mustURL(t, "gs://"+bucket+"/denied"), remote.UploadOptions{}, func() error { return nil })
	res, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Add(gcstest.Fault{Do: gcstest.Status(http.StatusForbidden)})
	ops := []struct {
		name string
		run  func() error
	}{
		{"upload", func() error { _, err := destination.UploadDir(t.Context(), d, bs[1].Dir, nil); return err }},
		{"list", func() error { _, err := d.List(t.Context()); return err }},
		{"download", func() error {
			_, err := destination.Download(t.Context(), d, res.Name, filepath.Join(t.TempDir(), "down"), nil)
			return err
		}},
	}
	for _, op := range ops {
		if err := op.run(); exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "IAM roles") {
			t.Errorf("%s refused: %v (exit %d), want exit %d naming the IAM roles", op.name, err, exitcode.Of(err), exitcode.Usage)
		}
	}
}
