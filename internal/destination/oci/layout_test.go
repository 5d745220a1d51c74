package oci_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/oci/layout"
	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

// testLayoutIndexReplaced: a commit and a delete replace index.json whole,
// with a rename, instead of rewriting it in place, where a step killed or
// media pulled in that moment would leave an index naming no backup: a
// reader that opened the index before either still reads all of the old
// one. What runs cut short left beside the index is swept (a partial blob
// once a day old), and a delete leaves exactly the blobs of the backups
// that remain.
func testLayoutIndexReplaced(t *testing.T, bs []desttest.Backup) {
	for _, format := range []string{destination.FormatArtifact, destination.FormatImage} {
		t.Run(format, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			d := openDest(t, "oci:"+dir, destination.RegistryOptions{Format: format})
			if _, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil); err != nil {
				t.Fatal(err)
			}
			// What runs cut short left: a stage, a next index, and a
			// day-old partial blob; and another run's blob in progress.
			leftovers := []string{filepath.Join(dir, ".etcd-backup-index", "index.json"), filepath.Join(dir, ".index.json.1234.part"), filepath.Join(dir, "oci-put-blob1234")}
			inProgress := filepath.Join(dir, "oci-put-blob5678")
			if err := os.Mkdir(filepath.Dir(leftovers[0]), 0o700); err != nil {
				t.Fatal(err)
			}
			for _, f := range append(leftovers, inProgress) {
				if err := os.WriteFile(f, []byte(`{"manifests": [`), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			dayOld := time.Now().Add(-25 * time.Hour)
			if err := os.Chtimes(leftovers[2], dayOld, dayOld); err != nil {
				t.Fatal(err)
			}

			read := readsOldIndex(t, dir)
			if _, err := destination.UploadDir(t.Context(), d, bs[1].Dir, nil); err != nil {
				t.Fatal(err)
			}
			read("the second upload's commit")
			for _, f := range leftovers {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("%s, left by a run cut short, is still there after a commit", f)
				}
			}
			if _, err := os.Stat(inProgress); err != nil {
				t.Errorf("%s, another run's blob in progress, is gone after a commit: %v", inProgress, err)
			}
			if tags := indexTags(t, dir); len(tags) != 2 {
				t.Fatalf("index after two uploads names %v, want two backups", tags)
			}

			read = readsOldIndex(t, dir)
			if err := d.Delete(t.Context(), oci.Tag(bs[0].Manifest)); err != nil {
				t.Fatal(err)
			}
			read("the delete")
			leftOnly(t, d, dir, bs[1])
		})
	}
}

// testLayoutDeleteWhenFull: prune is how a full medium gets room, so a
// delete works on a layout whose file system has not one byte free, where
// the next index has no room until the backup's blobs are gone. It needs a
// file system of its own, a tmpfs, which only a privileged test can mount.
func testLayoutDeleteWhenFull(t *testing.T, bs []desttest.Backup) {
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=16m,mode=0700"); err != nil {
		t.Skipf("mount a tmpfs to fill up: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	dir := filepath.Join(mnt, "layout")
	d := openDest(t, "oci:"+dir, destination.RegistryOptions{})
	for _, b := range bs[:2] {
		if _, err := destination.UploadDir(t.Context(), d, b.Dir, nil); err != nil {
			t.Fatal(err)
		}
	}
	fill(t, filepath.Join(mnt, "filler"))
	if err := os.WriteFile(filepath.Join(mnt, "probe"), []byte{1}, 0o600); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("a 1-byte file on the filled tmpfs: %v, want ENOSPC", err)
	}

	if err := d.Delete(t.Context(), oci.Tag(bs[0].Manifest)); err != nil {
		t.Fatalf("delete on a full medium: %v", err)
	}
	leftOnly(t, d, dir, bs[1])
}

// testLayoutDeleteBadEntry: a delete that meets an index entry whose digest
// is malformed (another tool's, or damage), or that names as a manifest a
// blob far larger than any manifest (a snapshot's) or a directory, cannot
// tell which blobs that entry uses: it fails naming the digest, at the
// first attempt, and changes nothing. The large blob is not read whole.
func testLayoutDeleteBadEntry(t *testing.T, bs []desttest.Backup) {
	large := bytes.Repeat([]byte("x"), 4<<20+1)
	cases := []struct {
		name  string
		entry func(dir string) imgspecv1.Descriptor
		says  string
	}{
		{"malformed digest", func(string) imgspecv1.Descriptor {
			return imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageManifest, Digest: "sha256:zz", Size: 2}
		}, `"sha256:zz"`},
		{"a large blob as a manifest", func(dir string) imgspecv1.Descriptor {
			d := digest.FromBytes(large)
			if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), large, 0o600); err != nil {
				t.Fatal(err)
			}
			return imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageManifest, Digest: d, Size: int64(len(large))}
		}, digest.FromBytes(large).String() + ", which the index names as a manifest, is over 4 MiB"},
		{"a directory as a manifest", func(dir string) imgspecv1.Descriptor {
			d := digest.FromString("a directory")
			path := filepath.Join(dir, "blobs", "sha256", d.Encoded())
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(path, "data"), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
			return imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageManifest, Digest: d, Size: 2}
		}, "/blobs/sha256/" + digest.FromString("a directory").Encoded() + " is a directory: the layout is damaged"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			d, logged := openLogged(t, "oci:"+dir)
			for _, b := range bs[:2] {
				if _, err := destination.UploadDir(t.Context(), d, b.Dir, nil); err != nil {
					t.Fatal(err)
				}
			}
			index := readIndex(t, dir)
			index.Manifests = append(index.Manifests, c.entry(dir))
			data, err := json.Marshal(index)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			before := blobFiles(t, dir)

			err = d.Delete(t.Context(), oci.Tag(bs[0].Manifest))
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Errorf("delete beside the entry = %v, want it refused saying %q", err, c.says)
			}
			if tags := indexTags(t, dir); len(tags) != 3 {
				t.Errorf("index after the refused delete names %v, want all three entries", tags)
			}
			if got := blobFiles(t, dir); !slices.Equal(got, before) {
				t.Errorf("blobs after the refused delete: %v, want %v", got, before)
			}
			if strings.Contains(logged.String(), "retrying") {
				t.Errorf("a layout's delete was retried:\n%s", logged)
			}
		})
	}
}

// testLayoutListFailsOnce: a layout whose index cannot be read (here a
// directory in its place) fails list at the first attempt: a local file
// that fails to read fails again, and five tries would only cost 15 s.
func testLayoutListFailsOnce(t *testing.T, bs []desttest.Backup) {
	dir := filepath.Join(t.TempDir(), "layout")
	d, logged := openLogged(t, "oci:"+dir)
	if _, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "index.json")
	if err := os.Remove(index); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(index, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := d.List(t.Context()); err == nil || strings.Contains(logged.String(), "retrying") {
		t.Errorf("list of a layout whose index.json is a directory = %v; want it to fail at the first attempt, logged:\n%s", err, logged)
	}
}

// openLogged opens url with a log kept for the test to read.
func openLogged(t *testing.T, url string) (destination.Dest, *bytes.Buffer) {
	t.Helper()
	var logged bytes.Buffer
	o := options(t, destination.RegistryOptions{})
	o.Log = slog.New(slog.NewTextHandler(&logged, nil))
	d, err := kinds().Open(t.Context(), url, o)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() { d.Close() })
	return d, &logged
}

// leftOnly checks a layout after a delete: its index names b alone, which
// lists complete, and it holds exactly b's blobs.
func leftOnly(t *testing.T, d destination.Dest, dir string, b desttest.Backup) {
	t.Helper()
	if tags := indexTags(t, dir); !slices.Equal(tags, []string{oci.Tag(b.Manifest)}) {
		t.Errorf("index after the delete names %v, want only %s", tags, oci.Tag(b.Manifest))
	}
	entries, err := d.List(t.Context())
	if err != nil || len(entries) != 1 || entries[0].State != destination.Complete {
		t.Errorf("list after the delete = %v (%v), want the backup left, complete", entries, err)
	}
	got := blobFiles(t, dir)
	if want := manifestBlobs(t, dir); !slices.Equal(got, want) {
		t.Errorf("blobs after the delete: %v, want exactly those of the backup left: %v", got, want)
	}
}

// fill writes path until its file system has no byte left, in ever
// smaller writes.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for n := 1 << 20; n > 0; n /= 2 {
		buf := make([]byte, n)
		for {
			if _, err := f.Write(buf); errors.Is(err, unix.ENOSPC) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// readsOldIndex opens the layout's index.json and returns a check that the
// open file still reads as it did, whole, after what changed the index.
func readsOldIndex(t *testing.T, dir string) func(after string) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	before, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return func(after string) {
		t.Helper()
		now, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		if string(now) != string(before) {
			t.Errorf("index.json, opened before %s, reads %d bytes after it, %d before: it was rewritten in place, not replaced", after, len(now), len(before))
		}
	}
}

func readIndex(t *testing.T, dir string) imgspecv1.Index {
	t.Helper()
	var index imgspecv1.Index
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err == nil {
		err = json.Unmarshal(data, &index)
	}
	if err != nil {
		t.Fatal(err)
	}
	return index
}

func indexTags(t *testing.T, dir string) []string {
	t.Helper()
	var tags []string
	for _, m := range readIndex(t, dir).Manifests {
		tags = append(tags, m.Annotations[imgspecv1.AnnotationRefName])
	}
	return tags
}

// blobFiles is the sorted names of the files in the layout's blobs/sha256.
func blobFiles(t *testing.T, dir string) []string {
	t.Helper()
	blobs, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range blobs {
		names = append(names, b.Name())
	}
	return names
}

// manifestBlobs is the sorted hex digests of the blobs the layout's index
// names: each manifest, its config and its layers.
func manifestBlobs(t *testing.T, dir string) []string {
	t.Helper()
	var blobs []string
	for _, desc := range readIndex(t, dir).Manifests {
		var m imgspecv1.Manifest
		data, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", desc.Digest.Encoded()))
		if err == nil {
			err = json.Unmarshal(data, &m)
		}
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, desc.Digest.Encoded(), m.Config.Digest.Encoded())
		for _, l := range m.Layers {
			blobs = append(blobs, l.Digest.Encoded())
		}
	}
	slices.Sort(blobs)
	return slices.Compact(blobs)
}

// testLayoutRecovery: the README's way out of a layout whose index.json is
// lost, with jq, lists every backup of both forms, oldest first, and copies
// each out as a backup that verifies.
func testLayoutRecovery(t *testing.T, bs []desttest.Backup) {
	if _, err := exec.LookPath("jq"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("jq is not installed; CI installs it")
		}
		t.Skip("jq is not installed")
	}
	list, copyOut := readmeRecovery(t)
	dir := filepath.Join(t.TempDir(), "layout")
	// The newer first, so that the list's order is its own.
	forms := map[string]string{bs[1].Manifest.Timestamp: destination.FormatImage, bs[0].Manifest.Timestamp: destination.FormatArtifact}
	for _, b := range []desttest.Backup{bs[1], bs[0]} {
		d := openDest(t, "oci:"+dir, destination.RegistryOptions{Format: forms[b.Manifest.Timestamp]})
		if _, err := destination.UploadDir(t.Context(), d, b.Dir, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(dir, "index.json")); err != nil {
		t.Fatal(err)
	}

	lines := strings.Split(strings.TrimSpace(shell(t, dir, list)), "\n")
	if len(lines) != 2 {
		t.Fatalf("the README's list printed %q, want the two backups", lines)
	}
	for i, line := range lines {
		ts, m, _ := strings.Cut(line, " ")
		want := bs[i].Manifest
		if ts != want.Timestamp {
			t.Errorf("line %d of the list is %q, want the backup of %s", i+1, line, want.Timestamp)
			continue
		}
		out := t.TempDir()
		shell(t, dir, strings.NewReplacer("/var/tmp/b", out, "blobs/sha256/MANIFEST", m).Replace(copyOut))
		if forms[ts] == destination.FormatImage {
			shell(t, out, "tar -xf etcd-backup.tar && rm etcd-backup.tar")
			out = filepath.Join(out, "backup")
		}
		got, err := verify.Dir(t.Context(), out, verify.Options{Log: desttest.Log(t)})
		if err != nil {
			t.Errorf("the %s backup copied out as the README says: %v", forms[ts], err)
			continue
		}
		if got.File(manifest.KindSnapshot).SHA256 != want.File(manifest.KindSnapshot).SHA256 {
			t.Errorf("the %s backup copied out has snapshot %s, want %s", forms[ts], got.File(manifest.KindSnapshot).SHA256, want.File(manifest.KindSnapshot).SHA256)
		}
	}
}

// readmeRecovery returns the README's two blocks for a layout whose index
// is lost: the one that lists the backups, without its cd, and the one
// that copies one out.
func readmeRecovery(t *testing.T) (list, copyOut string) {
	t.Helper()
	data, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "**A layout whose `index.json` is lost**")
	var blocks []string
	for range 2 {
		var block string
		_, section, _ = strings.Cut(section, "```sh\n")
		block, section, _ = strings.Cut(section, "```")
		blocks = append(blocks, block)
	}
	cd, rest, found := strings.Cut(blocks[0], "\n")
	if !ok || !found || !strings.HasPrefix(cd, "cd PATH") || !strings.Contains(blocks[1], "MANIFEST") {
		t.Fatalf("README has no section on a lost index with a list that starts in the layout and a copy of MANIFEST: %q", blocks)
	}
	return rest, blocks[1]
}

// shell runs script with sh in dir and returns what it printed.
func shell(t *testing.T, dir, script string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "sh", "-c", script)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	return string(out)
}

// testLayoutBeside: an upload does not begin a new layout one level above
// a layout, where a mistyped path would split a site's backups across two
// layouts, nor inside one; it does begin one in a directory that holds
// other files, as the root of a USB stick does.
func testLayoutBeside(t *testing.T, bs []desttest.Backup) {
	root := t.TempDir()
	layout := filepath.Join(root, "media", "backups")
	if err := os.Mkdir(filepath.Dir(layout), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := destination.UploadDir(t.Context(), openDest(t, "oci:"+layout, destination.RegistryOptions{}), bs[0].Dir, nil); err != nil {
		t.Fatal(err)
	}
	usb := filepath.Join(root, "usb")
	if err := os.MkdirAll(filepath.Join(usb, "site"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"notes.txt", "site/index.json"} {
		if err := os.WriteFile(filepath.Join(usb, f), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, dir, refusal string
	}{
		{"above a layout", filepath.Join(root, "media"), "oci:" + filepath.Join(root, "media") + " is not a layout, and the layouts below it are oci:" + layout + ": give one of them, or a directory of its own for a new layout"},
		{"in its blobs", filepath.Join(layout, "blobs"), "oci:" + filepath.Join(layout, "blobs") + " is inside the layout oci:" + layout + ": give that layout"},
		{"deeper in it", filepath.Join(layout, "blobs", "sha256", "new"), "is inside the layout oci:" + layout + ":"},
		{"beside other files", usb, ""},
		{"the layout", layout, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tree(t, root)
			_, err := destination.UploadDir(t.Context(), openDest(t, "oci:"+tt.dir, destination.RegistryOptions{}), bs[1].Dir, nil)
			switch {
			case tt.refusal == "" && err != nil:
				t.Fatalf("upload to oci:%s: %v", tt.dir, err)
			case tt.refusal == "":
				return
			case err == nil || !strings.Contains(err.Error(), tt.refusal) || exitcode.Of(err) != exitcode.Usage:
				t.Fatalf("upload to oci:%s = %v (exit %d), want exit %d, %q", tt.dir, err, exitcode.Of(err), exitcode.Usage, tt.refusal)
			}
			if after := tree(t, root); !slices.Equal(after, before) {
				t.Errorf("a refused upload changed what is there: %v, then %v", before, after)
			}
		})
	}
}

// tree lists every path below root.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		paths = append(paths, path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// testLayoutMalformedDigests: a layout entry whose index digest, or whose
// manifest's layer digest, is malformed (damaged media, another tool) is
// told, at the first attempt, and the layout's other backups stay within
// reach: list lists them and download --latest takes the newest of them.
// Before, a layer digest without an algorithm panicked list, and an index
// digest failed it after five attempts. An image index, which has no
// config, is still told as no backup of this tool.
func testLayoutMalformedDigests(t *testing.T, bs []desttest.Backup) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir, tag string, good imgspecv1.Descriptor) imgspecv1.Descriptor
		listed bool // as corrupt; else only warned of
		says   string
	}{
		{"index entry", func(t *testing.T, dir, tag string, good imgspecv1.Descriptor) imgspecv1.Descriptor {
			good.Digest = "bogus"
			return good
		}, false, "cannot be read: its index entry names its manifest by a malformed digest"},
		{"snapshot layer", func(t *testing.T, dir, tag string, good imgspecv1.Descriptor) imgspecv1.Descriptor {
			return damagedManifest(t, dir, good, func(m *imgspecv1.Manifest) { m.Layers[0].Digest = "bogus" })
		}, true, `manifest names a malformed digest "bogus"`},
		{"config outside the layout", func(t *testing.T, dir, tag string, good imgspecv1.Descriptor) imgspecv1.Descriptor {
			return damagedManifest(t, dir, good, func(m *imgspecv1.Manifest) { m.Config.Digest = "sha256:../../../etc/passwd" })
		}, true, `manifest names a malformed digest "sha256:../../../etc/passwd"`},
		{"an index, which has no config to be malformed", func(t *testing.T, dir, tag string, good imgspecv1.Descriptor) imgspecv1.Descriptor {
			return damagedManifest(t, dir, good, func(m *imgspecv1.Manifest) {
				*m = imgspecv1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageIndex}
			})
		}, true, `not a backup written by etcd-backup (artifactType "")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			d, logged := openLogged(t, "oci:"+dir)
			res, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			index := readIndex(t, dir)
			tag := oci.Tag(bs[1].Manifest)
			bad := tt.damage(t, dir, tag, index.Manifests[0])
			bad.Annotations = map[string]string{imgspecv1.AnnotationRefName: tag}
			index.Manifests = append(index.Manifests, bad)
			data, err := json.Marshal(index)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			logged.Reset()

			entries, err := d.List(t.Context())
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			want := []string{res.Name + " complete"}
			if tt.listed {
				want = append(want, tag+" corrupt")
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.Name+" "+string(e.State))
				if e.Name == tag && !strings.Contains(e.Problem, tt.says) {
					t.Errorf("%s is corrupt for %q, want %q", tag, e.Problem, tt.says)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("list = %v, want %v", got, want)
			}
			if !tt.listed && !strings.Contains(logged.String(), tt.says) {
				t.Errorf("list did not warn %q:\n%s", tt.says, logged)
			}
			if strings.Contains(logged.String(), "retrying") {
				t.Errorf("the damaged entry was read again:\n%s", logged)
			}
			found, err := destination.Newest(t.Context(), d, "", desttest.Log(t))
			if err != nil || found.Complete[0].Name != res.Name {
				t.Errorf("newest = %v, %v; want %s", found, err, res.Name)
			}
			if _, err := d.Open(t.Context(), tag); err == nil || exitcode.Of(err) != exitcode.Verify || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("open %s = %v (exit %d), want exit %d, %q", tag, err, exitcode.Of(err), exitcode.Verify, tt.says)
			}
		})
	}
}

// damagedManifest stores a copy of the manifest good describes, changed by
// change, and returns its descriptor.
func damagedManifest(t *testing.T, dir string, good imgspecv1.Descriptor, change func(*imgspecv1.Manifest)) imgspecv1.Descriptor {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", good.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	var m imgspecv1.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	change(&m)
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(data)
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageManifest, Digest: d, Size: int64(len(data))}
}

// FuzzLayoutManifest: whatever a layout's manifest and backup.json hold
// (damaged media, another tool's files), list neither panics nor fails:
// the entry is listed, corrupt, or skipped with a warning, and opening it
// fails, if it does, with an error rather than a panic. In the manifest,
// {bj} stands for backup.json's SHA-256 and {bjsize} for its size.
func FuzzLayoutManifest(f *testing.F) {
	artifact := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.etcd-backup.backup.v1",` +
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:a30e32158cb5435226323eae640e05ce9fcda34c74de0a26920bbf03418f59cd","size":6938656,"annotations":{"org.opencontainers.image.title":"snapshot_2026-12-04_123011.db"}},` +
		`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{bj}","size":{bjsize},"annotations":{"org.opencontainers.image.title":"backup.json"}}],` +
		`"annotations":{"io.etcd-backup.cluster-id":"59eeeb94-c2d4-431e-9a9e-86c28748efbe","io.etcd-backup.timestamp":"2026-12-04_123011"}}`
	image := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{bj}","size":{bjsize}},` +
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{bj}","size":{bjsize}}],` +
		`"annotations":{"io.etcd-backup.format":"image"}}`
	bj := `{"tool":{"name":"etcd-backup"},"timestamp":"2026-12-04_123011","files":[{"name":"snapshot_2026-12-04_123011.db","kind":"snapshot","size":6938656,"sha256":"a30e32158cb5435226323eae640e05ce9fcda34c74de0a26920bbf03418f59cd"}]}`
	f.Add(artifact, []byte(bj))
	f.Add(image, []byte(bj))
	f.Add(strings.Replace(artifact, "sha256:a30e", "a30e", 1), []byte(bj))
	f.Add(strings.Replace(artifact, `"sha256:{bj}"`, `"sha256:../../index.json"`, 1), []byte(bj))
	f.Add(`{"layers":[{}]}`, []byte("{}"))
	f.Add(`[]`, []byte{})
	f.Add(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, []byte{})
	tag := "59eeeb94-c2d4-431e-9a9e-86c28748efbe_2026-12-04_123011-a30e32158cb5"
	f.Fuzz(func(t *testing.T, m string, bj []byte) {
		dir := t.TempDir()
		blob := func(data []byte) digest.Digest {
			d := digest.FromBytes(data)
			if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), data, 0o600); err != nil {
				t.Fatal(err)
			}
			return d
		}
		bd := blob(bj)
		m = strings.NewReplacer("{bj}", bd.Encoded(), "{bjsize}", fmt.Sprint(len(bj))).Replace(m)
		md := blob([]byte(m))
		index := imgspecv1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageIndex, Manifests: []imgspecv1.Descriptor{{
			MediaType: imgspecv1.MediaTypeImageManifest, Digest: md, Size: int64(len(m)),
			Annotations: map[string]string{imgspecv1.AnnotationRefName: tag},
		}}}
		data, err := json.Marshal(index)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		o := options(t, destination.RegistryOptions{})
		o.Log = slog.New(slog.DiscardHandler)
		d, err := kinds().Open(t.Context(), "oci:"+dir, o)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, err := d.List(t.Context()); err != nil {
			t.Fatalf("list of a layout whose manifest is %q: %v", m, err)
		}
		if s, err := d.Open(t.Context(), tag); err == nil {
			s.Close()
		}
	})
}

// FuzzLayoutIndex: whatever a layout's index.json holds, opening the
// layout, listing it and opening a backup in it end in a result or an
// error, never a panic.
func FuzzLayoutIndex(f *testing.F) {
	tag := "59eeeb94-c2d4-431e-9a9e-86c28748efbe_2026-12-04_123011-a30e32158cb5"
	f.Add(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"annotations":{"org.opencontainers.image.ref.name":"` + tag + `"}}]}`)
	f.Add(`{"manifests":[{"digest":"bogus","annotations":{"org.opencontainers.image.ref.name":"` + tag + `"}}]}`)
	f.Add(`{"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}`)
	f.Add(`{"manifests":null}`)
	f.Add(`{`)
	f.Fuzz(func(t *testing.T, index string) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o700); err != nil {
			t.Fatal(err)
		}
		// The empty config, a blob that parses as JSON, for the index to name.
		if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "index.json"), []byte(index), 0o600); err != nil {
			t.Fatal(err)
		}
		o := options(t, destination.RegistryOptions{})
		o.Log = slog.New(slog.DiscardHandler)
		o.StallTimeout = 0
		d, err := kinds().Open(t.Context(), "oci:"+dir, o)
		if err != nil {
			return
		}
		defer d.Close()
		d.List(t.Context())
		if s, err := d.Open(t.Context(), tag); err == nil {
			s.Close()
		}
	})
}

// testLayoutRerunDamaged: a re-run of an upload whose stored blob was
// since cut short says that the layout holds this backup, damaged, and how
// to remove it; not that the tag names other content.
func testLayoutRerunDamaged(t *testing.T, bs []desttest.Backup) {
	dir := filepath.Join(t.TempDir(), "layout")
	d := openDest(t, "oci:"+dir, destination.RegistryOptions{})
	res, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap := bs[0].Manifest.File(manifest.KindSnapshot)
	if err := os.Truncate(filepath.Join(dir, "blobs", "sha256", snap.SHA256), snap.Size/2); err != nil {
		t.Fatal(err)
	}
	_, err = destination.UploadDir(t.Context(), d, bs[0].Dir, nil)
	want := res.URL + " already holds this backup, damaged (layer " + snap.Name + ": its blob sha256:" + snap.SHA256
	if err == nil || exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "skopeo delete "+res.URL+"), then upload again") {
		t.Errorf("re-run over a damaged backup = %v (exit %d), want exit %d, %q and how to remove it", err, exitcode.Of(err), exitcode.Usage, want)
	}
	// Deleted, as skopeo delete does it, the backup is stored whole again.
	ref, err := layout.NewReference(dir, res.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.DeleteImage(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil); err != nil {
		t.Fatalf("upload once the damaged backup is deleted: %v", err)
	}
	if entries, err := d.List(t.Context()); err != nil || len(entries) != 1 || entries[0].State != destination.Complete {
		t.Errorf("list after the upload again = %v, %v; want the backup, complete", entries, err)
	}
}
