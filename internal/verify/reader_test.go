package verify

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// fakeSnapshot is a stream shaped as etcd sends one: 512-byte pages, then
// the SHA-256 of those pages.
func fakeSnapshot(pages int) []byte {
	db := bytes.Repeat([]byte("etcd page "), pages*512/10+1)[:pages*512]
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

func fakeArchive(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range []tar.Header{
		{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: dir + "/etcd-pod.yaml", Mode: 0o644, Size: 4},
	} {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tw.Write([]byte("pod\n")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func fileOf(kind, name string, data []byte) manifest.File {
	d := manifest.NewDigest()
	d.Write(data)
	return manifest.File{Kind: kind, Name: name, Size: d.Size(), SHA256: d.SHA256(), CRC32C: d.CRC32C()}
}

func flip(data []byte, at int) []byte {
	out := bytes.Clone(data)
	out[at] ^= 1
	return out
}

func TestReader(t *testing.T) {
	b := &manifest.Backup{StaticPods: []manifest.StaticPod{{Component: "etcd", Revision: 5}}}
	snap := fakeSnapshot(64)
	arch := fakeArchive(t, "static-pod-resources/etcd-pod-5")
	badLayout := fakeArchive(t, "static-pod-resources/etcd-pod-4")
	snapFile := fileOf(manifest.KindSnapshot, "snapshot_x.db", snap)
	archFile := fileOf(manifest.KindResources, "static_kuberesources_x.tar.gz", arch)
	readErr := errors.New("disk read failed")

	tests := []struct {
		name string
		r    io.Reader
		want manifest.File
		// verdict is "" for a clean end, else what the error holds.
		verdict string
		code    int
	}{
		{"snapshot", bytes.NewReader(snap), snapFile, "", 0},
		{"archive", bytes.NewReader(arch), archFile, "", 0},
		{"snapshot in one-byte reads", iotest.OneByteReader(bytes.NewReader(snap)), snapFile, "", 0},
		{"changed byte, trailer intact", bytes.NewReader(flip(snap, 100)), snapFile, "does not match its trailer", exitcode.Verify},
		{"changed trailer", bytes.NewReader(flip(snap, len(snap)-1)), snapFile, "does not match its trailer", exitcode.Verify},
		{"other snapshot", bytes.NewReader(fakeSnapshot(65)), snapFile, "bytes, backup.json says", exitcode.Verify},
		{"truncated snapshot", bytes.NewReader(snap[:len(snap)-512]), snapFile, "does not match its trailer", exitcode.Verify},
		{"archive of another revision", bytes.NewReader(badLayout), fileOf(manifest.KindResources, "a.tar.gz", badLayout), "outside the expected directories", exitcode.Verify},
		{"archive changed", bytes.NewReader(flip(arch, len(arch)-6)), archFile, "checksum", exitcode.Verify},
		{"read error", io.MultiReader(bytes.NewReader(snap[:1000]), iotest.ErrReader(readErr)), snapFile, readErr.Error(), exitcode.Failure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewReader(t.Context(), tt.r, b, tt.want)
			defer v.Close()
			var got bytes.Buffer
			_, err := io.Copy(&got, v)
			if tt.verdict == "" {
				if err != nil {
					t.Fatalf("copy: %v", err)
				}
				if got.Len() != int(tt.want.Size) {
					t.Errorf("passed %d bytes, want %d", got.Len(), tt.want.Size)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.verdict) || exitcode.Of(err) != tt.code {
				t.Fatalf("copy: %v (exit %d), want %q (exit %d)", err, exitcode.Of(err), tt.verdict, tt.code)
			}
			if n, again := v.Read(make([]byte, 10)); n != 0 || again != err {
				t.Errorf("Read after the verdict = %d, %v; want 0, %v", n, again, err)
			}
		})
	}
}

// TestReaderStopsBadArchiveEarly: a consumer learns that a file is bad
// before it has read it all, when the check can tell.
func TestReaderStopsBadArchiveEarly(t *testing.T) {
	b := &manifest.Backup{StaticPods: []manifest.StaticPod{{Component: "etcd", Revision: 5}}}
	bad := fakeArchive(t, "static-pod-resources/etcd-pod-4")
	// A valid gzip member follows: only the layout check can stop the read.
	data := append(bytes.Clone(bad), bytes.Repeat(bad, 1000)...)
	v := NewReader(t.Context(), bytes.NewReader(data), b, fileOf(manifest.KindResources, "a.tar.gz", data))
	defer v.Close()
	n, err := io.Copy(io.Discard, v)
	if exitcode.Of(err) != exitcode.Verify {
		t.Fatalf("copy: %v", err)
	}
	if n >= int64(len(data)) {
		t.Errorf("read all %d bytes before the verdict", n)
	}
}

func TestReaderClose(t *testing.T) {
	snap := fakeSnapshot(64)
	v := NewReader(t.Context(), bytes.NewReader(snap), &manifest.Backup{}, fileOf(manifest.KindSnapshot, "s.db", snap))
	if _, err := v.Read(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Read(make([]byte, 100)); err == nil {
		t.Error("Read after Close succeeded")
	}
}
