package remote_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

func TestGCSParseRef(t *testing.T) {
	tests := []struct {
		in   string
		want remote.Ref
		err  bool
		msg  string // what the usage error says, when err
	}{
		{in: "gs://b-1/etcd/abc-123/2026-01-02_030405", want: remote.Ref{Dest: store.URL{Bucket: "b-1", Path: "etcd"}, ClusterID: "abc-123", Timestamp: "2026-01-02_030405"}},
		{in: "gs://b-1/abc/2026-01-02_030405/", want: remote.Ref{Dest: store.URL{Bucket: "b-1"}, ClusterID: "abc", Timestamp: "2026-01-02_030405"}},
		{in: "gs://b-1/a/b/c/2026-01-02_030405", want: remote.Ref{Dest: store.URL{Bucket: "b-1", Path: "a/b"}, ClusterID: "c", Timestamp: "2026-01-02_030405"}},
		{in: "gs://b-1/" + strings.Repeat("c", 128) + "/2026-01-02_030405", want: remote.Ref{Dest: store.URL{Bucket: "b-1"}, ClusterID: strings.Repeat("c", 128), Timestamp: "2026-01-02_030405"}},
		{in: "gs://b-1/" + strings.Repeat("c", 129) + "/2026-01-02_030405", err: true},
		{in: "gs://b-1/etcd/abc/2026-01-02_030405-0123456789ab", want: remote.Ref{Dest: store.URL{Bucket: "b-1", Path: "etcd"}, ClusterID: "abc", Timestamp: "2026-01-02_030405", Snapshot: "0123456789ab"}},
		{in: "gs://b-1/etcd/abc/2026-01-02_030405-0123456789AB", err: true},
		{in: "gs://b-1/etcd/abc/2026-01-02_030405-0123456789a", err: true},
		{in: "gs://b-1/etcd/abc/2026-01-02_030405-", err: true},
		{in: "gs://b-1/etcd/abc/2026-01-02_030405_0123456789ab", err: true},
		{in: "gs://b-1/etcd/abc", err: true},
		{in: "gs://b-1/2026-01-02_030405", err: true},
		{in: "gs://b-1/etcd/../2026-01-02_030405", err: true},
		{in: "gs://B/etcd/abc/2026-01-02_030405", err: true},
		{in: "s3://b-1/etcd/abc/2026-01-02_030405", err: true},
		{in: "/tmp/backup", err: true},
		// upload's snapshot-uri and manifest-uri, given for the backup.
		{in: "gs://b-1/etcd/abc/2026-01-02_030405-0123456789ab/backup.json", err: true, msg: "gs://b-1/etcd/abc/2026-01-02_030405-0123456789ab/backup.json is one of the objects of the backup gs://b-1/etcd/abc/2026-01-02_030405-0123456789ab: give the backup"},
		{in: "gs://b-1/abc/2026-01-02_030405/snapshot_2026-01-02_030405.db", err: true, msg: "of the backup gs://b-1/abc/2026-01-02_030405: give the backup"},
	}
	for _, tt := range tests {
		got, err := remote.ParseRef(tt.in)
		if tt.err {
			if exitcode.Of(err) != exitcode.Usage || !strings.Contains(fmt.Sprint(err), tt.msg) {
				t.Errorf("ParseRef(%q) = %+v, %v; want a usage error saying %q", tt.in, got, err, tt.msg)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if err == nil && got.String() != strings.TrimSuffix(tt.in, "/") {
			t.Errorf("ParseRef(%q).String() = %q", tt.in, got.String())
		}
	}
}

// TestWithRealBackup runs everything that needs a backup of a real etcd
// member; the subtests share one, each with its own emulator.
// FuzzParseRef checks that a parsed backup URL prints as a URL that parses
// to the same backup, and that a rejected one is a usage error.
func FuzzParseRef(f *testing.F) {
	f.Add("gs://b-1/etcd/abc/2026-01-02_030405-0123456789ab")
	f.Add("gs://b-1/etcd/abc/2026-01-02_030405")
	f.Add("gs://b-1/abc/2026-01-02_030405-0123456789a/")
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := remote.ParseRef(s)
		if err != nil {
			if exitcode.Of(err) != exitcode.Usage {
				t.Fatalf("ParseRef(%q): %v, want a usage error", s, err)
			}
			return
		}
		again, err := remote.ParseRef(ref.String())
		if err != nil || again != ref {
			t.Fatalf("ParseRef(%q) = %+v, but its String %q parses to %+v, %v", s, ref, ref.String(), again, err)
		}
	})
}

func TestGCSWithRealBackup(t *testing.T) {
	dir, b := localBackup(t)
	dest := "gs://" + bucket + "/etcd"
	localManifest, err := os.ReadFile(filepath.Join(dir, manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	snap, res := b.File(manifest.KindSnapshot), b.File(manifest.KindResources)
	// The backup's directory: its timestamp and its snapshot's digest.
	bdir := b.Timestamp + "-" + snap.SHA256[:12]

	t.Run("round trip", func(t *testing.T) {
		srv := gcstest.New(t, bucket)
		proxy := gcstest.NewProxy(t, srv)
		c := client(t, proxy.Host())
		ctx := t.Context()
		up, err := upload(ctx, c, dir, mustURL(t, dest), remote.UploadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		prefix := dest + "/" + b.ClusterKey() + "/" + bdir + "/"
		if up.SnapshotURI != prefix+snap.Name || up.ResourcesURI != prefix+res.Name || up.ManifestURI != prefix+manifest.FileName {
			t.Errorf("URIs = %s %s %s", up.SnapshotURI, up.ResourcesURI, up.ManifestURI)
		}
		obj, err := srv.GetObject(bucket, "etcd/"+b.ClusterKey()+"/"+bdir+"/"+snap.Name)
		if err != nil {
			t.Fatal(err)
		}
		if obj.Metadata[remote.MetaSHA256] != snap.SHA256 || obj.Metadata[remote.MetaClusterVersion] != b.Cluster.Version || obj.Metadata[remote.MetaRevision] == "" {
			t.Errorf("snapshot metadata = %v", obj.Metadata)
		}
		uploaded, err := srv.GetObject(bucket, "etcd/"+b.ClusterKey()+"/"+bdir+"/"+manifest.FileName)
		if err != nil || !bytes.Equal(uploaded.Content, localManifest) {
			t.Errorf("uploaded backup.json differs from the local one (err %v)", err)
		}

		backups, err := c.List(ctx, mustURL(t, dest))
		if err != nil {
			t.Fatal(err)
		}
		if len(backups) != 1 || backups[0].State != remote.Complete || backups[0].Ref != up.Ref || backups[0].Size() != b.Size() {
			t.Fatalf("List = %+v", backups)
		}

		// Re-running the same upload sends nothing.
		before := len(proxy.Requests())
		if _, err := upload(ctx, c, dir, mustURL(t, dest), remote.UploadOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, r := range proxy.Requests()[before:] {
			if strings.Contains(r, "/upload/") {
				t.Errorf("second upload sent %s", r)
			}
		}

		if _, err := verifyRef(ctx, c, up.Ref, verify.Options{Log: logger(t)}); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "download")
		if _, err := download(ctx, c, up.Ref, out); err != nil {
			t.Fatal(err)
		}
		assertSameBackup(t, dir, out)
	})

	t.Run("verify with trial restore", func(t *testing.T) {
		srv := gcstest.New(t, bucket)
		c := client(t, srv.Host())
		up, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		scratch := t.TempDir()
		if _, err := verifyRef(t.Context(), c, up.Ref, verify.Options{Restore: true, ScratchDir: scratch, Log: logger(t)}); err != nil {
			t.Fatal(err)
		}
		if entries, _ := os.ReadDir(scratch); len(entries) != 0 {
			t.Errorf("scratch dir keeps %d entries", len(entries))
		}
	})

	t.Run("resources to another bucket", func(t *testing.T) {
		srv := gcstest.New(t, bucket, otherBucket)
		c := client(t, srv.Host())
		to := mustURL(t, "gs://"+otherBucket+"/keys")
		up, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{ResourcesTo: &to})
		if err != nil {
			t.Fatal(err)
		}
		want := "gs://" + otherBucket + "/keys/" + b.ClusterKey() + "/" + bdir + "/" + res.Name
		if up.ResourcesURI != want || up.Manifest.Locations[res.Name] != want {
			t.Errorf("resources at %s, recorded %v; want %s", up.ResourcesURI, up.Manifest.Locations, want)
		}
		if names := objects(t, srv, bucket); slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, res.Name) }) {
			t.Errorf("archive also in %s: %v", bucket, names)
		}
		if _, err := verifyRef(t.Context(), c, up.Ref, verify.Options{Log: logger(t)}); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "download")
		if _, err := download(t.Context(), c, up.Ref, out); err != nil {
			t.Fatal(err)
		}
		assertSameBackup(t, dir, out)
	})

	t.Run("conflicting object", func(t *testing.T) {
		srv := gcstest.New(t, bucket)
		name := "etcd/" + b.ClusterKey() + "/" + bdir + "/" + snap.Name
		put(srv, bucket, name, []byte("someone else's"), nil, b.CreatedAt)
		c := client(t, srv.Host())
		_, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{})
		// Retrying cannot help: exit 2, not 1, and it says so.
		if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "already exists with other content") || !strings.Contains(err.Error(), "not retryable") {
			t.Fatalf("Upload: %v (exit %d), want exit 2, a clash, not retryable", err, exitcode.Of(err))
		}
		if got, _ := srv.GetObject(bucket, name); string(got.Content) != "someone else's" {
			t.Error("conflicting object overwritten")
		}
		assertNotComplete(t, c, srv, dest)
	})

	t.Run("another backup.json already there", func(t *testing.T) {
		srv := gcstest.New(t, bucket, otherBucket)
		c := client(t, srv.Host())
		to := mustURL(t, "gs://"+otherBucket+"/keys")
		if _, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{ResourcesTo: &to}); err != nil {
			t.Fatal(err)
		}
		before := objects(t, srv, bucket)
		// The same backup, but the archive next to it: another backup.json.
		_, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{})
		if err == nil || !strings.Contains(err.Error(), manifest.FileName+" already exists with other content") {
			t.Fatalf("Upload: %v", err)
		}
		if after := objects(t, srv, bucket); !slices.Equal(before, after) {
			t.Errorf("objects went from %v to %v", before, after)
		}
	})

	// Upload checks content as it sends it: a file that no longer matches
	// backup.json is never committed, and what was sent before it is
	// removed again.
	for _, f := range []*manifest.File{snap, res} {
		t.Run("local "+f.Kind+" changed", func(t *testing.T) {
			changed := copyDir(t, dir)
			flipByte(t, filepath.Join(changed, f.Name), f.Size/2)
			srv := gcstest.New(t, bucket)
			c := client(t, srv.Host())
			_, err := upload(t.Context(), c, changed, mustURL(t, dest), remote.UploadOptions{})
			// The snapshot's structure check before sending, or the check
			// as it is sent, whichever notices first.
			if exitcode.Of(err) != exitcode.Verify || !strings.Contains(err.Error(), f.Name+": ") {
				t.Fatalf("Upload of a changed %s: %v (exit %d)", f.Name, err, exitcode.Of(err))
			}
			if names := objects(t, srv, bucket); len(names) != 0 {
				t.Errorf("objects left: %v", names)
			}
		})
	}

	isSnapshotData := func(r *http.Request) bool {
		return gcstest.IsUploadData(r) && strings.Contains(r.URL.RawQuery, "snapshot_")
	}
	// Transient faults: the upload goes through, and the backup verifies.
	for _, tt := range []struct {
		name   string
		faults func(p *gcstest.Proxy) []gcstest.Fault
	}{
		{"transient 503 then success", func(*gcstest.Proxy) []gcstest.Fault {
			return []gcstest.Fault{
				{Match: gcstest.IsUpload, Times: 3, Do: gcstest.Status(http.StatusServiceUnavailable)},
				{Match: func(r *http.Request) bool { return r.Method == http.MethodGet }, Times: 2, Do: gcstest.Status(http.StatusBadGateway)},
			}
		}},
		// The snapshot is sent again from its start, and checked again.
		{"reset mid-upload once", func(*gcstest.Proxy) []gcstest.Fault {
			return []gcstest.Fault{{Match: isSnapshotData, Times: 1, Do: gcstest.Reset(64 << 10)}}
		}},
		// The retry finds the snapshot there and accepts it by checksum.
		{"answer lost after the snapshot landed", func(p *gcstest.Proxy) []gcstest.Fault {
			return []gcstest.Fault{{Match: isSnapshotData, Times: 1, Do: p.LoseAnswer()}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := gcstest.New(t, bucket)
			proxy := gcstest.NewProxy(t, srv)
			for _, f := range tt.faults(proxy) {
				proxy.Add(f)
			}
			c := client(t, proxy.Host())
			up, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := verifyRef(t.Context(), c, up.Ref, verify.Options{Log: logger(t)}); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("reset mid-upload", func(t *testing.T) {
		srv := gcstest.New(t, bucket)
		proxy := gcstest.NewProxy(t, srv)
		proxy.Add(gcstest.Fault{Match: isSnapshotData, Do: gcstest.Reset(64 << 10)})
		c := client(t, proxy.Host())
		if _, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{}); err == nil {
			t.Fatal("Upload succeeded through resets")
		}
		if names := objects(t, srv, bucket); len(names) != 0 {
			t.Errorf("objects left: %v", names)
		}
		assertNotComplete(t, c, srv, dest)
	})

	t.Run("interrupted mid-upload", func(t *testing.T) {
		srv := gcstest.New(t, bucket)
		proxy := gcstest.NewProxy(t, srv)
		ctx, cancel := context.WithCancelCause(t.Context())
		proxy.Add(gcstest.Fault{Match: isSnapshotData, Do: gcstest.Stall(func() { cancel(errors.New("interrupted by terminated")) })})
		c := client(t, proxy.Host())
		if _, err := upload(ctx, c, dir, mustURL(t, dest), remote.UploadOptions{}); err == nil {
			t.Fatal("Upload succeeded after interruption")
		}
		if names := objects(t, srv, bucket); len(names) != 0 {
			t.Errorf("objects left: %v", names)
		}
		assertNotComplete(t, client(t, srv.Host()), srv, dest)
	})

	t.Run("emulator down", func(t *testing.T) {
		host := gcstest.DeadHost(t)
		c := client(t, host)
		if _, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{}); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Upload: %v, want connection refused", err)
		}
	})

	// An endpoint that accepts connections and never answers: every
	// operation fails with the stall, each request bounded by the stall
	// timeout and retried for RetryDeadline, not held until ctx ends.
	t.Run("black hole", func(t *testing.T) {
		gc, err := gcs.New(t.Context(), gcs.Options{
			EmulatorHost:  gcstest.BlackHole(t),
			StallTimeout:  100 * time.Millisecond,
			RetryDeadline: 300 * time.Millisecond,
			RetryInitial:  time.Millisecond,
			RetryMax:      10 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer gc.Close()
		c := &remote.Client{Bucket: func(name string) remote.Store { return gc.Bucket(name) }, Log: logger(t), ProgressInterval: time.Second}
		u := mustURL(t, dest)
		ref := remote.Ref{Dest: u, ClusterID: b.ClusterKey(), Timestamp: b.Timestamp, Snapshot: snap.SHA256[:12]}
		ops := map[string]func(ctx context.Context) error{
			"upload": func(ctx context.Context) error {
				_, err := upload(ctx, c, dir, u, remote.UploadOptions{})
				return err
			},
			"list":   func(ctx context.Context) error { _, err := c.List(ctx, u); return err },
			"latest": func(ctx context.Context) error { _, err := newest(ctx, c, u, ""); return err },
			"download": func(ctx context.Context) error {
				_, err := download(ctx, c, ref, filepath.Join(t.TempDir(), "out"))
				return err
			},
			"verify": func(ctx context.Context) error {
				_, err := verifyRef(ctx, c, ref, verify.Options{Log: logger(t)})
				return err
			},
			"prune": func(ctx context.Context) error {
				_, err := c.Prune(ctx, u, remote.PruneOptions{Policy: destination.Policy{KeepLast: 1}})
				return err
			},
		}
		for name, op := range ops {
			t.Run(name, func(t *testing.T) {
				// Far beyond the bound, far below the test's own timeout.
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				if err := op(ctx); !errors.Is(err, store.ErrStalled) || ctx.Err() != nil {
					t.Errorf("%s: %v, want %v before the overall deadline", name, err, store.ErrStalled)
				}
			})
		}
	})

	corruptions := []struct {
		name   string
		damage func(t *testing.T, srv *gcstest.Server, prefix string)
	}{
		{"flipped byte in snapshot, stored checksum stale", func(t *testing.T, srv *gcstest.Server, prefix string) {
			replace(t, srv, prefix+snap.Name, false, func(data []byte) []byte { data[len(data)/2] ^= 1; return data })
		}},
		{"flipped byte in snapshot, stored checksum updated", func(t *testing.T, srv *gcstest.Server, prefix string) {
			replace(t, srv, prefix+snap.Name, true, func(data []byte) []byte { data[len(data)/2] ^= 1; return data })
		}},
		{"flipped byte in archive, stored checksum stale", func(t *testing.T, srv *gcstest.Server, prefix string) {
			replace(t, srv, prefix+res.Name, false, func(data []byte) []byte { data[len(data)/3] ^= 0x80; return data })
		}},
		{"flipped byte in archive, stored checksum updated", func(t *testing.T, srv *gcstest.Server, prefix string) {
			replace(t, srv, prefix+res.Name, true, func(data []byte) []byte { data[len(data)/3] ^= 0x80; return data })
		}},
		{"truncated snapshot", func(t *testing.T, srv *gcstest.Server, prefix string) {
			replace(t, srv, prefix+snap.Name, true, func(data []byte) []byte { return data[:len(data)-1] })
		}},
		{"missing snapshot", func(t *testing.T, srv *gcstest.Server, prefix string) {
			if err := srv.Backend().DeleteObject(bucket, prefix+snap.Name); err != nil {
				t.Fatal(err)
			}
		}},
		{"no backup.json", func(t *testing.T, srv *gcstest.Server, prefix string) {
			if err := srv.Backend().DeleteObject(bucket, prefix+manifest.FileName); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range corruptions {
		t.Run(tt.name, func(t *testing.T) {
			srv := gcstest.New(t, bucket)
			c := client(t, srv.Host())
			up, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tt.damage(t, srv, "etcd/"+b.ClusterKey()+"/"+bdir+"/")
			_, err = verifyRef(t.Context(), c, up.Ref, verify.Options{Log: logger(t)})
			if exitcode.Of(err) != exitcode.Verify {
				t.Errorf("Verify: %v (exit %d), want exit 4", err, exitcode.Of(err))
			}
			// Into a new directory: removed again. Into an empty one: left empty.
			parent := t.TempDir()
			newDir := filepath.Join(parent, "new")
			if _, err := download(t.Context(), c, up.Ref, newDir); exitcode.Of(err) != exitcode.Verify {
				t.Errorf("Download: %v (exit %d), want exit 4", err, exitcode.Of(err))
			}
			if _, err := os.Stat(newDir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("download left %s behind (%v)", newDir, err)
			}
			empty := t.TempDir()
			if _, err := download(t.Context(), c, up.Ref, empty); exitcode.Of(err) != exitcode.Verify {
				t.Errorf("Download: %v, want exit 4", err)
			}
			if entries, _ := os.ReadDir(empty); len(entries) != 0 {
				t.Errorf("download left %v", entries)
			}
		})
	}

	// Bytes that change on the way, caught by the CRC32C the service sends:
	// the cause stays reachable with errors.Is, and the object is named once.
	t.Run("corrupt in transit", func(t *testing.T) {
		srv := gcstest.New(t, bucket)
		proxy := gcstest.NewProxy(t, srv)
		c := client(t, proxy.Host())
		up, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, snap.Name))
		if err != nil {
			t.Fatal(err)
		}
		proxy.Add(gcstest.Fault{
			Match: func(r *http.Request) bool {
				return r.URL.Query().Get("alt") == "media" && strings.HasSuffix(r.URL.Path, snap.Name)
			},
			Do: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Goog-Hash", "crc32c="+base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, snap.CRC32C)))
				w.Header().Set("Content-Length", strconv.Itoa(len(data)))
				bad := bytes.Clone(data)
				bad[len(bad)/2] ^= 1
				w.Write(bad)
			},
		})
		_, err = verifyRef(t.Context(), c, up.Ref, verify.Options{Log: logger(t)})
		if exitcode.Of(err) != exitcode.Verify || !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("Verify: %v (exit %d), want exit 4 and store.ErrCorrupt", err, exitcode.Of(err))
		}
		if u := up.SnapshotURI; strings.Count(err.Error(), u) != 1 {
			t.Errorf("Verify: %v, want %s named once", err, u)
		}
	})

	t.Run("download into a non-empty directory", func(t *testing.T) {
		srv := gcstest.New(t, bucket)
		c := client(t, srv.Host())
		up, err := upload(t.Context(), c, dir, mustURL(t, dest), remote.UploadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := t.TempDir()
		if err := os.WriteFile(filepath.Join(out, "other"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := download(t.Context(), c, up.Ref, out); exitcode.Of(err) != exitcode.Usage {
			t.Errorf("Download: %v, want a usage error", err)
		}
	})
}

// assertSameBackup checks that a download is the local backup again, down
// to backup.json's bytes, and passes the local verification.
func assertSameBackup(t *testing.T, want, got string) {
	t.Helper()
	entries, err := os.ReadDir(got)
	if err != nil {
		t.Fatal(err)
	}
	wantEntries, _ := os.ReadDir(want)
	if len(entries) != len(wantEntries) {
		t.Errorf("download holds %d entries, the backup %d", len(entries), len(wantEntries))
	}
	for _, e := range entries {
		a, _ := os.ReadFile(filepath.Join(want, e.Name()))
		b, _ := os.ReadFile(filepath.Join(got, e.Name()))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs after download", e.Name())
		}
		if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", e.Name(), fi.Mode())
		}
	}
	if _, err := verify.Dir(t.Context(), got, verify.Options{Log: logger(t)}); err != nil {
		t.Errorf("verify of the download: %v", err)
	}
}

// assertNotComplete checks that no complete backup is listed at dest.
func assertNotComplete(t *testing.T, c *remote.Client, srv *gcstest.Server, dest string) {
	t.Helper()
	backups, err := c.List(t.Context(), mustURL(t, dest))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range backups {
		if b.State == remote.Complete {
			t.Errorf("%s listed complete; objects %v", b.Ref, objects(t, srv, bucket))
		}
	}
	if _, err := newest(t.Context(), c, mustURL(t, dest), ""); err == nil {
		t.Error("Latest found a backup")
	}
}

// replace edits an object's content behind the client's back, keeping its
// attributes: the stored checksums too (bit rot), or recomputed (an object
// replaced with other content).
func replace(t *testing.T, srv *gcstest.Server, name string, rehash bool, edit func([]byte) []byte) {
	t.Helper()
	obj, err := srv.GetObject(bucket, name)
	if err != nil {
		t.Fatal(err)
	}
	if rehash {
		obj.Crc32c, obj.Md5Hash = "", ""
	}
	srv.CreateObject(fakestorage.Object{ObjectAttrs: obj.ObjectAttrs, Content: edit(obj.Content)})
}

func copyDir(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(out, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		os.Chmod(filepath.Join(out, e.Name()), 0o600)
	}
	return out
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestGCSSameSecond uploads two backups of one cluster taken in the same
// second, as two schedules or two masters do: both are kept, listed and
// complete, under names that differ by the snapshot's digest.
func TestGCSSameSecond(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Keys: 20})
	at := time.Now().UTC().Truncate(time.Second)
	var dirs []string
	for i := range 2 {
		if i > 0 {
			// A write between the two: the second snapshot differs.
			if err := c.SetProgressing(t.Context(), "network", false); err != nil {
				t.Fatal(err)
			}
		}
		dir := filepath.Join(t.TempDir(), "backup")
		_, err := backup.Save(t.Context(), backup.Options{
			Dir: dir, HostRoot: c.HostRoot, NodeName: c.NodeName, Now: func() time.Time { return at },
			MinClusterAge: 24 * time.Hour, RequestTimeout: 10 * time.Second,
			WaitTimeout: time.Minute, PollInterval: time.Second, ProgressInterval: time.Second, StallTimeout: time.Minute,
			Log: logger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	srv := gcstest.New(t, bucket)
	rc := client(t, srv.Host())
	dest := mustURL(t, "gs://"+bucket+"/etcd")
	var refs []remote.Ref
	for _, dir := range dirs {
		b, err := verify.Listing(dir)
		if err != nil {
			t.Fatal(err)
		}
		up, err := upload(t.Context(), rc, dir, dest, remote.UploadOptions{})
		if err != nil {
			t.Fatalf("upload of %s: %v", b.Timestamp, err)
		}
		refs = append(refs, up.Ref)
	}
	if refs[0].Timestamp != refs[1].Timestamp || refs[0] == refs[1] {
		t.Fatalf("refs %v and %v: want one timestamp, two names", refs[0], refs[1])
	}
	backups, err := rc.List(t.Context(), dest)
	if err != nil {
		t.Fatal(err)
	}
	var listed []remote.Ref
	for _, b := range backups {
		if b.State != remote.Complete {
			t.Errorf("%s: %s (%s)", b.Ref, b.State, b.Problem)
		}
		listed = append(listed, b.Ref)
	}
	if len(listed) != 2 || !slices.Contains(listed, refs[0]) || !slices.Contains(listed, refs[1]) {
		t.Errorf("List = %v, want %v", listed, refs)
	}
	for _, ref := range refs {
		if _, err := verifyRef(t.Context(), rc, ref, verify.Options{Log: logger(t)}); err != nil {
			t.Errorf("verify %s: %v", ref, err)
		}
	}
}

// TestGCSFilesGoneBeforeCommit takes away what an upload has stored, just
// before it writes backup.json: the upload fails and leaves no complete
// backup, rather than report one whose files are gone, and a run again
// stores it whole.
func TestGCSFilesGoneBeforeCommit(t *testing.T) {
	dir, _ := localBackup(t)
	dest := mustURL(t, "gs://"+bucket+"/etcd")
	tests := []struct {
		name string
		// meddle acts on the objects the upload has stored so far.
		meddle func(t *testing.T, srv *gcstest.Server, names []string)
		// left is how many objects remain once the upload has failed, or
		// -1 where the emulator differs from the service: it ignores a
		// delete's generation precondition, and so removes an object
		// replaced since the upload stored it, which the service keeps.
		left int
	}{
		{
			name: "a prune on a machine two days ahead",
			meddle: func(t *testing.T, srv *gcstest.Server, _ []string) {
				ahead := client(t, srv.Host())
				ahead.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
				if _, err := ahead.Prune(t.Context(), dest, remote.PruneOptions{Policy: destination.Policy{KeepLast: 1}}); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "a file deleted by a lifecycle rule",
			meddle: func(t *testing.T, srv *gcstest.Server, names []string) {
				if err := srv.Backend().DeleteObject(bucket, names[0]); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "a file replaced by hand",
			meddle: func(t *testing.T, srv *gcstest.Server, names []string) {
				put(srv, bucket, names[0], []byte("other"), nil, time.Now())
			},
			left: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := gcstest.New(t, bucket)
			c := client(t, srv.Host())
			inner, meddled := c.Bucket, false
			c.Bucket = func(name string) remote.Store {
				return beforeManifest{Store: inner(name), hook: func() {
					if !meddled {
						meddled = true
						tt.meddle(t, srv, objects(t, srv, bucket))
					}
				}}
			}
			_, err := upload(t.Context(), c, dir, dest, remote.UploadOptions{})
			if err == nil || exitcode.Of(err) != exitcode.Failure || !strings.Contains(err.Error(), "while the upload ran") {
				t.Fatalf("upload = %v (exit %d), want a failure naming the file taken away", err, exitcode.Of(err))
			}
			if got := objects(t, srv, bucket); tt.left >= 0 && len(got) != tt.left {
				t.Errorf("left %v, want %d objects", got, tt.left)
			}
			assertNotComplete(t, c, srv, dest.String())
			up, err := upload(t.Context(), client(t, srv.Host()), dir, dest, remote.UploadOptions{})
			if err != nil {
				t.Fatalf("upload again: %v", err)
			}
			if _, err := verifyRef(t.Context(), c, up.Ref, verify.Options{Log: logger(t)}); err != nil {
				t.Errorf("verify of the upload run again: %v", err)
			}
		})
	}
}

// beforeManifest runs hook just before backup.json is created.
type beforeManifest struct {
	remote.Store
	hook func()
}

func (s beforeManifest) Put(ctx context.Context, name string, r io.ReadSeeker, o store.PutOptions) (*store.Object, error) {
	if path.Base(name) == manifest.FileName {
		s.hook()
	}
	return s.Store.Put(ctx, name, r, o)
}
