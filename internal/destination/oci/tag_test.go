package oci_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"go.podman.io/image/v5/docker/reference"

	"github.com/etcd-backup/etcd-backup/internal/destination/oci"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// FuzzTag: whatever the cluster ID, a backup's tag is one a registry
// accepts (at most 128 characters of the tag charset), names its cluster
// and <ts>, and differs for another snapshot taken in the same second.
func FuzzTag(f *testing.F) {
	f.Add("0b9c2a3e-5b7c-4d2e-8f00-1234567890ab", int64(1796347881), []byte("snapshot"))
	f.Add("", int64(0), []byte{})
	f.Add(strings.Repeat("é/", 100), int64(253402300799), []byte{0})
	f.Add("-.-", int64(-1), []byte("x"))
	repo, err := reference.ParseNormalizedNamed("localhost:5000/backups/etcd")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, cluster string, sec int64, content []byte) {
		at := time.Unix(sec%253402300800, 0).UTC()
		if at.Year() < 1 || at.Year() > 9999 {
			return
		}
		ts := at.Format(manifest.TimestampLayout)
		b := backupNamed(cluster, ts, content)
		tag := oci.Tag(b)
		if _, err := reference.WithTag(repo, tag); err != nil || len(tag) > 128 {
			t.Fatalf("Tag(%q, %s) = %q (%d characters): %v", cluster, ts, tag, len(tag), err)
		}
		if !strings.Contains(tag, "_"+ts+"-") {
			t.Errorf("tag %q does not carry the timestamp %s", tag, ts)
		}
		other := backupNamed(cluster, ts, append([]byte("other "), content...))
		if oci.Tag(other) == tag {
			t.Errorf("two snapshots of cluster %q in the same second share tag %q", cluster, tag)
		}
	})
}

func backupNamed(cluster, ts string, content []byte) *manifest.Backup {
	sum := sha256.Sum256(content)
	return &manifest.Backup{
		Cluster:   manifest.Cluster{ID: cluster},
		Timestamp: ts,
		Files:     []manifest.File{{Name: manifest.SnapshotName(ts, false), Kind: manifest.KindSnapshot, SHA256: hex.EncodeToString(sum[:])}},
	}
}
