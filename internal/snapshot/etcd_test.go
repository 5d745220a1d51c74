package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// fixture is a snapshot of a real member and what the member said about it.
type fixture struct {
	path   string
	digest Digest
	// rev and keys are the member's revision and live key count when the
	// snapshot was taken.
	rev, keys int64
	compacted int64
	version   string
}

// realSnapshot snapshots a member with history: overwritten and deleted keys,
// before and after a compaction, make the live key count differ from the
// number of revisions kept.
func realSnapshot(t *testing.T) fixture {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{Keys: 500})
	ctx := t.Context()
	cli, err := c.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	var put *clientv3.PutResponse
	for i := range 50 {
		if put, err = cli.Put(ctx, fmt.Sprintf("/test/key-%d", i%20), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctx, "/test/key-0"); err != nil {
		t.Fatal(err)
	}
	compacted := put.Header.Revision
	if _, err := cli.Compact(ctx, compacted, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/test/key-1", clientv3.WithRange("/test/key-3")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/test/key-0", "back"); err != nil {
		t.Fatal(err)
	}
	count, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}

	path, d, version := save(t, cli)
	// Nothing writes between the count and the snapshot. The snapshot stream
	// carries no response header to compare with.
	return fixture{path: path, digest: d, rev: count.Header.Revision, keys: count.Count, compacted: compacted, version: version}
}

// save streams a snapshot of the member behind cli through Copy into a new
// file, and returns the file, its digest and the storage version the member
// announced.
func save(tb testing.TB, cli *clientv3.Client) (string, Digest, string) {
	tb.Helper()
	resp, err := cli.SnapshotWithVersion(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Snapshot.Close()
	path := filepath.Join(tb.TempDir(), "snapshot.db")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	d, err := Copy(f, resp.Snapshot)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatalf("Copy() error = %v", err)
	}
	return path, d, resp.Version
}

func TestEtcdSnapshot(t *testing.T) {
	fx := realSnapshot(t)
	ctx := t.Context()
	data, err := os.ReadFile(fx.path)
	if err != nil {
		t.Fatal(err)
	}
	if want := wantDigest(data); fx.digest != want {
		t.Fatalf("Copy() = %+v, want %+v", fx.digest, want)
	}

	t.Run("check", func(t *testing.T) {
		st, err := Check(ctx, fx.path)
		if err != nil {
			t.Fatalf("Check() error = %v", err)
		}
		if st.Revision != fx.rev || st.KeyCount != fx.keys {
			t.Errorf("Check() revision %d, keys %d; member said revision %d, keys %d", st.Revision, st.KeyCount, fx.rev, fx.keys)
		}
		if st.StorageVersion != fx.version || st.CompactRevision != fx.compacted {
			t.Errorf("Check() storage version %q, compacted at %d; member said %q, %d", st.StorageVersion, st.CompactRevision, fx.version, fx.compacted)
		}
		if st.ConsistentIndex == 0 || st.Term == 0 || st.Size != fx.digest.Size-sha256.Size {
			t.Errorf("Check() = %+v: want a consistent index, a term and the file size less the trailer", st)
		}
		want, err := etcdutl.NewV3(zap.NewNop()).Status(fx.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Revision != want.Revision || st.KeyCount != int64(want.TotalKey) || st.StorageVersion != want.Version {
			t.Errorf("Check() = %+v; etcdutl snapshot status says %+v", st, want)
		}
	})

	t.Run("verify", func(t *testing.T) {
		got, err := verifyFile(fx.path)
		if err != nil || got != fx.digest {
			t.Fatalf("verifyFile() = %+v, %v; want %+v", got, err, fx.digest)
		}
	})

	flipped := writeFile(t, "flipped.db", flip(data, len(data)/2))
	t.Run("flipped byte", func(t *testing.T) {
		if _, err := Copy(io.Discard, bytes.NewReader(flip(data, len(data)/2))); !errors.Is(err, ErrTrailerMismatch) {
			t.Errorf("Copy() error = %v, want %v", err, ErrTrailerMismatch)
		}
		if _, err := verifyFile(flipped); !errors.Is(err, ErrTrailerMismatch) {
			t.Errorf("verifyFile() error = %v, want %v", err, ErrTrailerMismatch)
		}
	})

	t.Run("truncated", func(t *testing.T) {
		for _, size := range []int{0, 100, 4096, 2 * 4096, len(data) / 2, len(data) - 4096 - sha256.Size} {
			path := writeFile(t, fmt.Sprintf("truncated-%d.db", size), data[:size])
			if _, err := Check(ctx, path); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Check() of the first %d bytes: error = %v, want %v", size, err, ErrCorrupt)
			}
		}
	})

	// Damage the header of every page past the meta pages and recompute the
	// trailer: a member whose own database is corrupt. bbolt panics on such
	// pages; Check and Restore must fail instead.
	damaged := bytes.Clone(data[:len(data)-sha256.Size])
	for off := 2 * 4096; off < len(damaged); off += 4096 {
		copy(damaged[off:off+16], bytes.Repeat([]byte{0xa5}, 16))
	}
	sum := sha256.Sum256(damaged)
	damagedPath := writeFile(t, "damaged.db", append(damaged, sum[:]...))
	t.Run("damaged pages", func(t *testing.T) {
		if _, err := verifyFile(damagedPath); err != nil {
			t.Fatalf("verifyFile() error = %v", err)
		}
		if _, err := Check(ctx, damagedPath); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Check() error = %v, want %v", err, ErrCorrupt)
		}
		if _, err := Restore(ctx, damagedPath, filepath.Join(t.TempDir(), "member-0")); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Restore() error = %v, want %v", err, ErrCorrupt)
		}
	})

	t.Run("restore", func(t *testing.T) {
		st, err := Restore(ctx, fx.path, filepath.Join(t.TempDir(), "member-0"))
		if err != nil {
			t.Fatalf("Restore() error = %v", err)
		}
		if st.Revision != fx.rev || st.KeyCount != fx.keys {
			t.Errorf("Restore() revision %d, keys %d; member said revision %d, keys %d", st.Revision, st.KeyCount, fx.rev, fx.keys)
		}
	})

	t.Run("restore refuses", func(t *testing.T) {
		busy := t.TempDir()
		if err := os.WriteFile(filepath.Join(busy, "data"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name, snapshot, dataDir string
		}{
			{name: "flipped byte", snapshot: flipped, dataDir: filepath.Join(t.TempDir(), "member-0")},
			{name: "no trailer", snapshot: writeFile(t, "bare.db", data[:len(data)-sha256.Size]), dataDir: filepath.Join(t.TempDir(), "member-0")},
			{name: "data dir not empty", snapshot: fx.path, dataDir: busy},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if _, err := Restore(ctx, tt.snapshot, tt.dataDir); err == nil {
					t.Error("Restore() succeeded")
				}
			})
		}
	})

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := Check(ctx, fx.path); !errors.Is(err, context.Canceled) {
			t.Errorf("Check() error = %v, want %v", err, context.Canceled)
		}
	})
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// BenchmarkCheck checks a snapshot of a real member holding 200,000 keys of
// about 1 KiB: many small values are the costly case per byte, where every
// page holds entries to walk.
func BenchmarkCheck(b *testing.B) {
	c := testcluster.New(b, testcluster.Options{Keys: 200_000})
	ctx := b.Context()
	cli, err := c.Client(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	path, d, _ := save(b, cli)

	b.SetBytes(d.Size)
	for b.Loop() {
		if _, err := Check(ctx, path); err != nil {
			b.Fatal(err)
		}
	}
}
