package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
)

// copyBackup copies the files of a backup directory into a new one.
func copyBackup(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, name := range dirNames(t, src) {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func flipByte(t *testing.T, path string, at func(size int64) int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	off := at(fi.Size())
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCatchesDamage(t *testing.T) {
	good, b := savedBackup(t, 200)
	srv := gcstest.New(t, "backups")
	env := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host()}
	snap := b.File(manifest.KindSnapshot).Name
	res := b.File(manifest.KindResources).Name
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"snapshot byte flipped", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, snap), func(n int64) int64 { return n / 2 })
		}, "trailer"},
		{"trailer byte flipped", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, snap), func(n int64) int64 { return n - 1 })
		}, "trailer"},
		{"archive byte flipped", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, res), func(n int64) int64 { return n / 2 })
		}, res},
		{"snapshot truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, snap), 4096); err != nil {
				t.Fatal(err)
			}
		}, "bytes"},
		{"archive missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, res))
		}, "missing"},
		{"second snapshot", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "snapshot_2020-01-01_000000.db"), []byte("x"), 0o600)
		}, "does not list"},
		{"manifest missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, manifest.FileName))
		}, "not a complete backup; it holds " + snap + " with no record to check it against: a save cut short before its last step, or a backup taken by cluster-backup.sh"},
		{"manifest garbage", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, manifest.FileName), []byte("{"), 0o600)
		}, manifest.FileName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyBackup(t, good)
			if code, _, stderr := cli(t, nil, "verify", dir); code != 0 {
				t.Fatalf("verify of the intact copy: exit %d\n%s", code, stderr)
			}
			tt.damage(t, dir)
			// The line names the backup once, as the directory or a
			// file in it: it is what the administrator looks at next.
			// Upload checks a snapshot's structure as it sends it, and
			// either check may be the one to find a flipped byte.
			for _, args := range [][]string{{"verify", dir}, {"upload", dir, "oci:" + filepath.Join(t.TempDir(), "layout")}, {"upload", dir, "gs://backups/etcd"}} {
				code, _, stderr := cli(t, env, args...)
				_, line, _ := strings.Cut(stderr, "ERROR ")
				said := strings.Contains(line, tt.want) || args[0] == "upload" && strings.Contains(line, "snapshot database is corrupt")
				if code != exitcode.Verify || !said || strings.Count(line, dir) != 1 {
					t.Errorf("%s: exit %d, want %d with %q, naming %s once:\n%s", args[0], code, exitcode.Verify, tt.want, dir, stderr)
				}
			}
		})
	}
	objs, err := srv.Objects("backups")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if path.Base(o.Name) == manifest.FileName {
			t.Errorf("a refused upload committed %s", o.Name)
		}
	}
}

// TestVerifyUnreadableFile: a file of the backup that cannot be read (here
// a link to itself) is named once, by verify and by upload.
func TestVerifyUnreadableFile(t *testing.T) {
	good, b := savedBackup(t, 20)
	dir := copyBackup(t, good)
	archive := filepath.Join(dir, b.File(manifest.KindResources).Name)
	if err := os.Remove(archive); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(archive), archive); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"verify", dir}, {"upload", dir, "oci:" + filepath.Join(t.TempDir(), "layout")}} {
		code, _, stderr := cli(t, nil, args...)
		_, line, _ := strings.Cut(stderr, "ERROR ")
		if code == 0 || !strings.Contains(line, archive+": too many levels of symbolic links") || strings.Count(line, archive) != 1 {
			t.Errorf("%s: exit %d, want a failure naming %s once:\n%s", args[0], code, archive, stderr)
		}
	}
}

// TestUploadUnreadableSnapshot: a snapshot this user may not read is named
// once, whichever of upload's checks meets it first.
func TestUploadUnreadableSnapshot(t *testing.T) {
	good, b := savedBackup(t, 20)
	dir := copyBackup(t, good)
	readableByAll(t, dir)
	snap := filepath.Join(dir, b.File(manifest.KindSnapshot).Name)
	if err := os.Chmod(snap, 0); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	readableByAll(t, dest)
	if err := os.Chmod(dest, 0o777); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := unprivileged(ctx, t, "upload", dir, "oci:"+filepath.Join(dest, "layout")).CombinedOutput()
	_, line, _ := strings.Cut(string(out), "ERROR ")
	if err == nil || !strings.Contains(line, "permission denied") || strings.Count(line, snap) != 1 {
		t.Errorf("%v, want a failure naming %s once:\n%s", err, snap, out)
	}
}

// TestVerifyModes: a mode other than the one save gave is no damage (oras,
// skopeo and FAT or exFAT media change it, and restore reads the file as
// it is); one that lets others read the backup is warned about.
func TestVerifyModes(t *testing.T) {
	good, b := savedBackup(t, 20)
	snap := b.File(manifest.KindSnapshot).Name
	tests := []struct {
		mode os.FileMode
		warn bool
	}{
		{0o644, true},
		{0o755, true},
		{0o640, true},
		{0o400, false},
		{0o700, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%04o", tt.mode), func(t *testing.T) {
			dir := copyBackup(t, good)
			if err := os.Chmod(filepath.Join(dir, snap), tt.mode); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := cli(t, nil, "verify", dir)
			if code != 0 {
				t.Fatalf("verify: exit %d\n%s", code, stderr)
			}
			warned := strings.Contains(stderr, fmt.Sprintf("mode %04o, saved 0600", tt.mode)) && strings.Contains(stderr, "chmod 600")
			if warned != tt.warn {
				t.Errorf("warned %v, want %v:\n%s", warned, tt.warn, stderr)
			}
			if code, _, stderr := cli(t, nil, "upload", dir, "oci:"+filepath.Join(t.TempDir(), "layout")); code != 0 {
				t.Errorf("upload: exit %d\n%s", code, stderr)
			}
		})
	}
}

// TestVerifyNotADirectory: a TARGET that is neither a directory nor a
// destination URL is a usage error; one that reads as an image reference
// without docker://, as upload's IMAGE_URL gives it, says what to give
// instead, for download, list and upload too. So do a file of a backup
// and the directory that backups are kept in, given for a backup's
// directory, for verify and upload.
func TestVerifyNotADirectory(t *testing.T) {
	dir := t.TempDir()
	const ref = "mirror.example.com:8443/etcd/backups:c1_2026-12-03_090000-0123456789ab"
	kept := t.TempDir()
	one := filepath.Join(kept, "2026-12-03")
	snapshot := filepath.Join(one, "snapshot_2026-12-03_090000.db")
	if err := os.Mkdir(one, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(one, manifest.FileName), snapshot} {
		if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"verify", filepath.Join(dir, "none")}, "is not a backup directory"},
		{[]string{"verify", snapshot}, snapshot + " is not a backup directory but a file of one: give " + one},
		{[]string{"upload", snapshot, "oci:" + filepath.Join(dir, "layout")}, snapshot + " is not a backup directory but a file of one: give " + one},
		{[]string{"verify", kept}, kept + " has no backup.json, but directories in it do: give one of them, e.g. " + one},
		{[]string{"upload", kept, "oci:" + filepath.Join(dir, "layout")}, kept + " has no backup.json, but directories in it do: give one of them, e.g. " + one},
		{[]string{"verify", ref}, ref + " is not a backup directory; as a destination, give docker://" + ref},
		{[]string{"verify", "--latest", "mirror.example.com/etcd/backups"}, "; as a destination, give docker://mirror.example.com/etcd/backups"},
		{[]string{"download", ref, filepath.Join(dir, "down")}, ", oci:PATH, e.g. docker://" + ref},
		{[]string{"list", "mirror.example.com/etcd/backups"}, ", oci:PATH, e.g. docker://mirror.example.com/etcd/backups"},
	}
	for _, tt := range tests {
		if code, _, stderr := cli(t, nil, tt.args...); code != exitcode.Usage || !strings.Contains(stderr, tt.want) {
			t.Errorf("etcd-backup %s: exit %d, want %d saying %q:\n%s", strings.Join(tt.args, " "), code, exitcode.Usage, tt.want, stderr)
		}
	}
}

// TestVerifyScratchDir: a --scratch-dir that is missing, not a directory or
// not writable is a usage error before anything is read, local or remote
// (the registry here listens nowhere), not a failed trial restore.
func TestVerifyScratchDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		scratch, target, want string
	}{
		{missing, dir, "--scratch-dir " + missing + " does not exist: give an existing directory"},
		{file, dir, "--scratch-dir " + file + " is not a directory: give an existing directory"},
		{filepath.Join(file, "sub"), dir, "--scratch-dir: stat " + filepath.Join(file, "sub") + ": not a directory"},
		{missing, "docker://127.0.0.1:1/etcd/backups", "--scratch-dir " + missing + " does not exist"},
	}
	for _, tt := range tests {
		args := []string{"verify", "--restore", "--scratch-dir", tt.scratch, tt.target}
		if strings.Contains(tt.target, "://") {
			args = append(args, "--latest")
		}
		if code, _, stderr := cli(t, nil, args...); code != exitcode.Usage || !strings.Contains(stderr, tt.want) {
			t.Errorf("etcd-backup %s: exit %d, want %d saying %q:\n%s", strings.Join(args, " "), code, exitcode.Usage, tt.want, stderr)
		}
	}

	// Not writable: as nobody where the tests run as root.
	readOnly := readOnlyDir(t)
	wantUsageUnprivileged(t, "--scratch-dir "+readOnly+" is not writable: ",
		"verify", "--restore", "--scratch-dir", readOnly, "--latest", "docker://127.0.0.1:1/etcd/backups")
}

// TestVerifyStructureBeyondChecksums damages both bbolt meta pages and then
// rewrites the trailer and backup.json to match, as a tool that "repaired"
// the checksums would: only the bbolt walk can still tell.
func TestVerifyStructureBeyondChecksums(t *testing.T) {
	dir, b := savedBackup(t, 50)
	snap := b.File(manifest.KindSnapshot)
	path := filepath.Join(dir, snap.Name)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const pageSize, metaMagicOffset = 4096, 16
	for _, page := range []int{0, 1} {
		data[page*pageSize+metaMagicOffset] ^= 0xff
	}
	db := data[:len(data)-sha256.Size]
	trailer := sha256.Sum256(db)
	copy(data[len(db):], trailer[:])
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	digest := manifest.NewDigest()
	digest.Write(data)
	snap.SHA256, snap.CRC32C = digest.SHA256(), digest.CRC32C()
	b.Etcd.SnapshotSHA256 = hex.EncodeToString(trailer[:])
	out, err := manifest.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, manifest.FileName), out, 0o600); err != nil {
		t.Fatal(err)
	}

	if code, _, stderr := cli(t, nil, "verify", dir); code != exitcode.Verify || !strings.Contains(stderr, "check snapshot") {
		t.Errorf("verify: exit %d, want %d from the bbolt check:\n%s", code, exitcode.Verify, stderr)
	}
}
