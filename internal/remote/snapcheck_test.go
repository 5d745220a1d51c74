package remote_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/snapshot/snapshottest"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
)

// TestDamagedStructureRefused: a snapshot whose page references are
// damaged, with a trailer and a backup.json that match, is neither sent nor
// downloaded (exit 4), and nothing of it is left behind.
func TestDamagedStructureRefused(t *testing.T) {
	good, _ := localBackup(t)
	dir := copyDir(t, good)
	b, err := snapshottest.DamageBackup(dir, snapshottest.SharedPage)
	if err != nil {
		t.Fatal(err)
	}
	srv := gcstest.New(t, bucket)
	c := client(t, srv.Host())
	dest := mustURL(t, "gs://"+bucket+"/etcd")

	t.Run("upload", func(t *testing.T) {
		_, err := upload(t.Context(), c, dir, dest, remote.UploadOptions{})
		if exitcode.Of(err) != exitcode.Verify || !strings.Contains(err.Error(), "referenced twice") {
			t.Fatalf("Upload: %v (exit %d), want exit 4 naming the page referenced twice", err, exitcode.Of(err))
		}
		if got := objects(t, srv, bucket); len(got) != 0 {
			t.Errorf("Upload sent %v", got)
		}
	})

	t.Run("download", func(t *testing.T) {
		// Stored as an upload from before the check would have stored it.
		ref := remote.Ref{Dest: dest, ClusterID: b.ClusterKey(), Timestamp: b.Timestamp}
		for _, name := range []string{b.File(manifest.KindSnapshot).Name, b.File(manifest.KindResources).Name, manifest.FileName} {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			put(srv, bucket, "etcd/"+ref.ClusterID+"/"+ref.Timestamp+"/"+name, data, metadata(fileOf(name, data).SHA256), b.CreatedAt)
		}
		out := filepath.Join(t.TempDir(), "backup")
		_, err := download(t.Context(), c, ref, out)
		if exitcode.Of(err) != exitcode.Verify || !strings.Contains(err.Error(), "referenced twice") {
			t.Fatalf("Download: %v (exit %d), want exit 4 naming the page referenced twice", err, exitcode.Of(err))
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("Download left %s behind (%v)", out, err)
		}
	})
}
