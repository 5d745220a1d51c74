package oci_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"
	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

func kinds() *destination.Registry {
	return destination.NewRegistry(oci.Registry(), oci.Layout())
}

func options(t *testing.T, reg destination.RegistryOptions) destination.Options {
	return destination.Options{
		Log: desttest.Log(t), StallTimeout: 5 * time.Second, RetryBase: 10 * time.Millisecond,
		ScratchDir: t.TempDir(), Registry: reg,
	}
}

func openDest(t *testing.T, url string, reg destination.RegistryOptions) destination.Dest {
	t.Helper()
	d, err := kinds().Open(t.Context(), url, options(t, reg))
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// putAll begins an upload of b to d and puts every file, leaving the
// commit to the caller.
func putAll(t *testing.T, d destination.Dest, b desttest.Backup) destination.Upload {
	t.Helper()
	up, err := d.Begin(t.Context(), b.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range b.Manifest.Files {
		open := func() (io.ReadCloser, error) { return os.Open(filepath.Join(b.Dir, f.Name)) }
		if _, _, err := up.Put(t.Context(), f, open); err != nil {
			up.Close()
			t.Fatal(err)
		}
	}
	return up
}

// foreignTag is a tag of our shape that no backup of like has.
func foreignTag(like *manifest.Backup) string {
	return oci.Tag(like)[:len(oci.Tag(like))-12] + "000000000000"
}

// TestOCI takes real backups once, for every subtest: each takes seconds.
func TestOCI(t *testing.T) {
	bs := desttest.Save(t)
	t.Run("LayoutConformance", func(t *testing.T) { testLayoutConformance(t, bs, destination.FormatArtifact) })
	t.Run("LayoutImageConformance", func(t *testing.T) { testLayoutConformance(t, bs, destination.FormatImage) })
	t.Run("RegistryConformanceHTTP", func(t *testing.T) { testRegistryConformanceHTTP(t, bs, destination.FormatArtifact) })
	t.Run("RegistryImageConformanceHTTP", func(t *testing.T) { testRegistryConformanceHTTP(t, bs, destination.FormatImage) })
	t.Run("RegistryConformanceTLS", func(t *testing.T) { testRegistryConformanceTLS(t, bs) })
	t.Run("LayoutModes", func(t *testing.T) { testLayoutModes(t, bs) })
	t.Run("Faults", func(t *testing.T) { testFaults(t, bs) })
	t.Run("ReadFaults", func(t *testing.T) { testReadFaults(t, bs) })
	t.Run("MetadataFaults", func(t *testing.T) { testMetadataFaults(t, bs) })
	t.Run("RateLimited", func(t *testing.T) { testRateLimited(t, bs) })
	t.Run("NarrowAccept", func(t *testing.T) { testNarrowAccept(t, bs) })
	t.Run("NoWrites", func(t *testing.T) { testNoWrites(t, bs) })
	t.Run("DeletesRefused", func(t *testing.T) { testDeletesRefused(t, bs) })
	t.Run("FilesTogether", func(t *testing.T) { testFilesTogether(t, bs) })
	t.Run("ListTogether", func(t *testing.T) { testListTogether(t, bs) })
	t.Run("LayoutDamagedIndex", func(t *testing.T) { testLayoutDamagedIndex(t, bs) })
	t.Run("MissingBlob", func(t *testing.T) { testMissingBlob(t, bs) })
	t.Run("LayoutLostManifest", func(t *testing.T) { testLayoutLostManifest(t, bs) })
	t.Run("ArtifactRefused", func(t *testing.T) { testArtifactRefused(t, bs) })
	t.Run("LayoutCommitsOneAtATime", func(t *testing.T) { testLayoutCommitsOneAtATime(t, bs) })
	t.Run("LayoutIndexReplaced", func(t *testing.T) { testLayoutIndexReplaced(t, bs) })
	t.Run("LayoutBeside", func(t *testing.T) { testLayoutBeside(t, bs) })
	t.Run("LayoutMalformedDigests", func(t *testing.T) { testLayoutMalformedDigests(t, bs) })
	t.Run("LayoutRerunDamaged", func(t *testing.T) { testLayoutRerunDamaged(t, bs) })
	t.Run("LayoutRecovery", func(t *testing.T) { testLayoutRecovery(t, bs) })
	t.Run("LayoutDeleteWhenFull", func(t *testing.T) { testLayoutDeleteWhenFull(t, bs) })
	t.Run("LayoutDeleteBadEntry", func(t *testing.T) { testLayoutDeleteBadEntry(t, bs) })
	t.Run("LayoutListFailsOnce", func(t *testing.T) { testLayoutListFailsOnce(t, bs) })
	t.Run("TagTakenMidway", func(t *testing.T) { testTagTakenMidway(t, bs) })
	t.Run("BodyTooLarge", func(t *testing.T) { testBodyTooLarge(t, bs) })
	t.Run("QuotaFull", func(t *testing.T) { testQuotaFull(t, bs) })
	t.Run("PrunePinned", func(t *testing.T) { testPrunePinned(t, bs) })
	t.Run("ByDigest", func(t *testing.T) { testByDigest(t, bs) })
	t.Run("PruneAttachments", func(t *testing.T) { testPruneAttachments(t, bs) })
	t.Run("Detours", func(t *testing.T) { testDetours(t, bs) })
}

// testByDigest: in a registry and in a layout, a backup is opened by its
// manifest's digest, as upload's IMAGE_DIGEST gives it, or by its tag
// pinned to that digest. A tag pinned to another backup's manifest, the
// digest of one of a backup's files, a digest no backup has, and one of
// another algorithm are each a usage error that says which.
func testByDigest(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{})
	for _, c := range []struct {
		name string
		url  string
		ro   destination.RegistryOptions
	}{
		{"registry", reg.URL("backups/digests"), destination.RegistryOptions{InsecureSkipTLSVerify: true}},
		{"layout", "oci:" + filepath.Join(t.TempDir(), "layout"), destination.RegistryOptions{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := openDest(t, c.url, c.ro)
			var digests []string
			for _, b := range bs[:2] {
				res, err := destination.UploadDir(t.Context(), d, b.Dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				digests = append(digests, res.Digest)
			}
			tag0 := oci.Tag(bs[0].Manifest)
			for _, pin := range []string{"@" + digests[1], oci.Tag(bs[1].Manifest) + "@" + digests[1]} {
				s, err := d.Open(t.Context(), pin)
				if err != nil {
					t.Fatalf("Open(%s): %v", pin, err)
				}
				if got := s.Manifest().Timestamp; got != bs[1].Manifest.Timestamp {
					t.Errorf("Open(%s) opened the backup of %s, want %s", pin, got, bs[1].Manifest.Timestamp)
				}
				s.Close()
			}
			snapshot := "sha256:" + bs[0].Manifest.File(manifest.KindSnapshot).SHA256
			for _, tc := range []struct{ name, want string }{
				{tag0 + "@" + digests[1], c.url + ":" + tag0 + " names the manifest " + digests[0] + ", not " + digests[1]},
				{"@" + snapshot, snapshot + " is one of the files of " + c.url + ":" + tag0 + ", not a backup's manifest"},
				{"@sha256:" + strings.Repeat("0", 64), "no backup in " + c.url + " has a manifest of that digest"},
				{"@sha512:" + strings.Repeat("0", 128), "backups are named by the sha256 digest of their manifest"},
			} {
				_, err := d.Open(t.Context(), tc.name)
				if exitcode.Of(err) != exitcode.Usage || !strings.Contains(fmt.Sprint(err), tc.want) {
					t.Errorf("Open(%s) = %v (exit %d), want exit %d, %q", tc.name, err, exitcode.Of(err), exitcode.Usage, tc.want)
				}
			}
		})
	}
}

// testPrunePinned: a backup that another tag also names (an operator's pin,
// "golden", made with skopeo copy) is left alone by prune, dry run or not,
// saying which tag pins it; a registry deletes a manifest with every tag
// that names it, so deleting the backup would take the pin too. Once the
// pin is gone, prune removes the backup.
func testPrunePinned(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{Deletes: true})
	// A registry deletes a manifest with all its tags; the pin goes by
	// distribution's own deletion of one tag.
	untag := func(t *testing.T, d destination.Dest, tag string) {
		reg.Delete(t, strings.TrimPrefix(d.URL(), "docker://"+reg.Host+"/")+"/manifests/"+tag)
	}
	layoutRef := func(t *testing.T, d destination.Dest, tag string) types.ImageReference {
		ref, err := layout.NewReference(strings.TrimPrefix(d.URL(), "oci:"), tag)
		if err != nil {
			t.Fatal(err)
		}
		return ref
	}
	cases := []struct {
		name  string
		url   string
		ro    destination.RegistryOptions
		ref   func(t *testing.T, d destination.Dest, tag string) types.ImageReference
		sys   *types.SystemContext
		untag func(t *testing.T, d destination.Dest, tag string)
	}{
		{"registry", reg.URL("backups/pinned"), destination.RegistryOptions{InsecureSkipTLSVerify: true},
			func(t *testing.T, d destination.Dest, tag string) types.ImageReference {
				ref, err := docker.ParseReference(strings.TrimPrefix(d.URL(), "docker:") + ":" + tag)
				if err != nil {
					t.Fatal(err)
				}
				return ref
			}, &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue}, untag},
		{"layout", "oci:" + filepath.Join(t.TempDir(), "layout"), destination.RegistryOptions{}, layoutRef, &types.SystemContext{},
			func(t *testing.T, d destination.Dest, tag string) {
				if err := layoutRef(t, d, tag).DeleteImage(t.Context(), nil); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := openDest(t, c.url, c.ro)
			var pinned destination.Result
			for _, b := range bs[:2] {
				res, err := destination.UploadDir(t.Context(), d, b.Dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				if pinned.Name == "" {
					pinned = res
				}
			}
			retag(t, c.ref(t, d, pinned.Name), c.ref(t, d, "golden"), c.sys)
			keepOne := destination.Policy{KeepLast: 1}
			for _, dryRun := range []bool{true, false} {
				decisions, err := destination.Prune(t.Context(), d, keepOne, "", time.Now(), dryRun)
				if err != nil {
					t.Fatalf("prune (dry run %v): %v", dryRun, err)
				}
				for _, dec := range decisions {
					if dec.Entry.Name == pinned.Name && (dec.Action != destination.Skip || !strings.Contains(dec.Reason, ":golden also names it")) {
						t.Errorf("prune (dry run %v) of the pinned backup: %s %q, want skip naming the pin", dryRun, dec.Action, dec.Reason)
					}
				}
			}
			for _, tag := range []string{"golden", pinned.Name} {
				s, err := d.Open(t.Context(), tag)
				if err != nil {
					t.Errorf("after prune, %s: %v", tag, err)
					continue
				}
				s.Close()
			}
			c.untag(t, d, "golden")
			decisions, err := destination.Prune(t.Context(), d, keepOne, "", time.Now(), false)
			if err != nil {
				t.Fatal(err)
			}
			if deleted := removed(decisions); len(deleted) != 1 || deleted[0] != pinned.Name {
				t.Errorf("once the pin is gone, prune deleted %q, want %s", deleted, pinned.Name)
			}
		})
	}
}

// retag makes to name the manifest from names, as skopeo copy within a
// repository does.
func retag(t *testing.T, from, to types.ImageReference, sys *types.SystemContext) {
	t.Helper()
	src, err := from.NewImageSource(t.Context(), sys)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	m, _, err := src.GetManifest(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := to.NewImageDestination(t.Context(), sys)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.PutManifest(t.Context(), m, nil); err != nil {
		t.Fatal(err)
	}
	if err := dst.Commit(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
}

func removed(decisions []destination.Decision) []string {
	var out []string
	for _, dec := range decisions {
		if dec.Action == destination.Remove {
			out = append(out, dec.Entry.Name)
		}
	}
	return out
}

// testTagTakenMidway: the tag is looked at again just before the manifest
// is pushed. Taken meanwhile by other content, the commit fails and the
// tag keeps naming that content; taken by the same backup (another run of
// the same upload), the commit succeeds without pushing again.
func testTagTakenMidway(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{})
	ro := destination.RegistryOptions{InsecureSkipTLSVerify: true}
	b := bs[0]
	cases := []struct {
		name     string
		take     func(t *testing.T, repo string)
		wantErr  string
		complete int // backups listed complete after the commit
	}{
		{"by other content", func(t *testing.T, repo string) {
			ref, err := docker.ParseReference("//" + reg.Host + "/" + repo + ":" + oci.Tag(b.Manifest))
			if err != nil {
				t.Fatal(err)
			}
			ocitest.PushForeign(t, ref, &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue})
		}, "already names other content", 0},
		{"by the same backup", func(t *testing.T, repo string) {
			if _, err := destination.UploadDir(t.Context(), openDest(t, reg.URL(repo), ro), b.Dir, nil); err != nil {
				t.Fatal(err)
			}
		}, "", 1},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			repo := "backups/midway" + strconv.Itoa(i)
			d := openDest(t, reg.URL(repo), ro)
			up := putAll(t, d, b)
			defer up.Close()
			c.take(t, repo)
			_, err := up.Commit(t.Context(), b.Manifest)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("commit after the same backup took the tag: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), c.wantErr) || exitcode.Of(err) != exitcode.Usage {
				t.Fatalf("commit after other content took the tag = %v (exit %d), want %q, exit %d: no retry can cure it", err, exitcode.Of(err), c.wantErr, exitcode.Usage)
			}
			entries, err := d.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			complete := 0
			for _, e := range entries {
				if e.State == destination.Complete {
					complete++
				}
			}
			if complete != c.complete {
				t.Errorf("list after the commit: %v, want %d complete backup", entries, c.complete)
			}
		})
	}
}

func testLayoutConformance(t *testing.T, bs []desttest.Backup, format string) {
	desttest.Run(t, desttest.Harness{
		OneBlob: format == destination.FormatImage,
		New: func(t *testing.T) destination.Dest {
			return openDest(t, "oci:"+filepath.Join(t.TempDir(), "layout"), destination.RegistryOptions{Format: format})
		},
		Foreign: func(t *testing.T, d destination.Dest, like *manifest.Backup) string {
			tag := foreignTag(like)
			ref, err := layout.NewReference(strings.TrimPrefix(d.URL(), "oci:"), tag)
			if err != nil {
				t.Fatal(err)
			}
			ocitest.PushForeign(t, ref, &types.SystemContext{})
			return tag
		},
		Tamper: func(t *testing.T, res destination.Result, f manifest.File) { desttest.FlipByte(t, res.Files[f.Name]) },
	}, bs)
}

func registryHarness(reg *ocitest.Registry, ro destination.RegistryOptions, sys *types.SystemContext) desttest.Harness {
	return desttest.Harness{
		OneBlob: ro.Format == destination.FormatImage,
		New: func(t *testing.T) destination.Dest {
			repo := "backups/" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
			return openDest(t, reg.URL(repo), ro)
		},
		Foreign: func(t *testing.T, d destination.Dest, like *manifest.Backup) string {
			tag := foreignTag(like)
			ref, err := docker.ParseReference(strings.TrimPrefix(d.URL(), "docker:") + ":" + tag)
			if err != nil {
				t.Fatal(err)
			}
			ocitest.PushForeign(t, ref, sys)
			return tag
		},
		Tamper: func(t *testing.T, res destination.Result, f manifest.File) {
			_, d, _ := strings.Cut(res.Files[f.Name], "@")
			desttest.FlipByte(t, reg.BlobPath(digest.Digest(d)))
		},
	}
}

func testRegistryConformanceHTTP(t *testing.T, bs []desttest.Backup, format string) {
	reg := ocitest.Start(t, ocitest.Options{Deletes: true})
	ro := destination.RegistryOptions{InsecureSkipTLSVerify: true, Format: format}
	desttest.Run(t, registryHarness(reg, ro, &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue}), bs)
}

func testRegistryConformanceTLS(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{TLS: true, Deletes: true})
	ro := destination.RegistryOptions{AuthFile: reg.AuthFile, CertDir: reg.CertDir}
	desttest.Run(t, registryHarness(reg, ro, &types.SystemContext{AuthFilePath: reg.AuthFile, DockerCertPath: reg.CertDir}), bs)
}

// testLayoutModes: a layout holds the whole cluster's secrets; everything
// upload writes in it is for its owner only (files 0600, directories 0700),
// whatever the umask, once the commit returns: sealing the layout (and
// flushing its file system) is the commit's last step, as the media may be
// pulled at once.
func testLayoutModes(t *testing.T, bs []desttest.Backup) {
	root := filepath.Join(t.TempDir(), "layout")
	// Files that are not the layout's, as at the root of a USB stick, keep
	// their modes.
	others := []string{filepath.Join(root, "README.txt"), filepath.Join(root, "photos", "a.jpg")}
	for _, path := range others {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("not a backup"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := openDest(t, "oci:"+root, destination.RegistryOptions{})
	b := bs[0]
	up := putAll(t, d, b)
	defer up.Close()
	if _, err := up.Commit(t.Context(), b.Manifest); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		switch {
		case slices.Contains(others, path), path == root, path == filepath.Dir(others[1]):
			want = 0o644
			if e.IsDir() {
				want = 0o755
			}
		case e.IsDir():
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %o once the commit returned, want %o", path, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testLayoutDamagedIndex: a layout whose index.json is not an OCI index is
// refused when it is opened, as a usage error naming the file, before any
// command reads or writes it; the layout is left as it was.
func testLayoutDamagedIndex(t *testing.T, bs []desttest.Backup) {
	dir := filepath.Join(t.TempDir(), "layout")
	if _, err := destination.UploadDir(t.Context(), openDest(t, "oci:"+dir, destination.RegistryOptions{}), bs[0].Dir, nil); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "index.json")
	for _, damaged := range []string{"garbage", `{"manifests": "x"}`, ""} {
		if err := os.WriteFile(index, []byte(damaged), 0o600); err != nil {
			t.Fatal(err)
		}
		d, err := kinds().Open(t.Context(), "oci:"+dir, options(t, destination.RegistryOptions{}))
		if err == nil {
			d.Close()
		}
		if exitcode.Of(err) != exitcode.Usage || err == nil || !strings.Contains(err.Error(), index+" is not an OCI index") {
			t.Errorf("open of a layout whose index.json is %q = %v (exit %d), want exit %d naming %s", damaged, err, exitcode.Of(err), exitcode.Usage, index)
		}
		if got, _ := os.ReadFile(index); string(got) != damaged {
			t.Errorf("index.json is %q after the open, want it left %q", got, damaged)
		}
	}

	// Half written by another run's commit, which holds the layout: not
	// called damaged, but held, and retryable.
	holdLayout(t, dir)
	opts := options(t, destination.RegistryOptions{})
	opts.StallTimeout = 200 * time.Millisecond
	d, err := kinds().Open(t.Context(), "oci:"+dir, opts)
	if err == nil {
		d.Close()
	}
	if exitcode.Of(err) != exitcode.Failure || err == nil || !strings.Contains(err.Error(), "held by another run") {
		t.Errorf("open of a layout whose index another run is writing = %v (exit %d), want exit %d, held by another run", err, exitcode.Of(err), exitcode.Failure)
	}
}

// holdLayout takes the layout's lock as another run's commit does, until
// release.
func holdLayout(t *testing.T, dir string) (release func()) {
	t.Helper()
	held, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return func() { held.Close() }
}

// testLayoutLostManifest: a layout whose index names a backup whose
// manifest file is gone (media copied in part) lists the others, and says
// which backup cannot be read and why, where it said nothing and, with no
// other backup, that nothing was stored there.
func testLayoutLostManifest(t *testing.T, bs []desttest.Backup) {
	dir := filepath.Join(t.TempDir(), "layout")
	var logs bytes.Buffer
	o := options(t, destination.RegistryOptions{})
	o.Log = slog.New(slog.NewTextHandler(&logs, nil))
	d, err := kinds().Open(t.Context(), "oci:"+dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var lost destination.Result
	for i, b := range bs[:2] {
		res, err := destination.UploadDir(t.Context(), d, b.Dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			lost = res
		}
	}
	if err := os.Remove(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(lost.Digest, "sha256:"))); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	entries, err := d.List(t.Context())
	if err != nil || len(entries) != 1 || entries[0].State != destination.Complete || entries[0].Name == lost.Name {
		t.Fatalf("list = %v, %v; want the other backup, complete", entries, err)
	}
	if !strings.Contains(logs.String(), lost.URL+" cannot be read") || !strings.Contains(logs.String(), "is missing") {
		t.Errorf("list said nothing of %s, whose manifest is gone:\n%s", lost.URL, logs.String())
	}
	if _, err := d.Open(t.Context(), lost.Name); err == nil || exitcode.Of(err) != exitcode.Verify || !strings.Contains(err.Error(), lost.URL+" cannot be read: its manifest") {
		t.Errorf("open %s, whose manifest is gone = %v (exit %d), want exit %d saying it cannot be read", lost.URL, err, exitcode.Of(err), exitcode.Verify)
	}
}

// testMissingBlob: a backup whose manifest names a blob that is gone (a
// layout's file removed by hand, a registry's blob deleted) is not usable:
// verify and download fail with exit 4, naming the destination once, and
// download leaves nothing. list finds it in a layout, where a look is a
// stat; a registry's blobs it takes on trust.
func testMissingBlob(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{Deletes: true})
	b := bs[0]
	archive := b.Manifest.File(manifest.KindResources).SHA256
	layoutDir, cutDir := filepath.Join(t.TempDir(), "layout"), filepath.Join(t.TempDir(), "layout")
	cases := []struct {
		name, url string
		ro        destination.RegistryOptions
		remove    func(t *testing.T)
		listed    destination.State
		says      string
	}{
		{"layout", "oci:" + layoutDir, destination.RegistryOptions{}, func(t *testing.T) {
			if err := os.Remove(filepath.Join(layoutDir, "blobs", "sha256", archive)); err != nil {
				t.Fatal(err)
			}
		}, destination.Corrupt, "is missing"},
		{"layout, cut short", "oci:" + cutDir, destination.RegistryOptions{}, func(t *testing.T) {
			if err := os.Truncate(filepath.Join(cutDir, "blobs", "sha256", archive), 10); err != nil {
				t.Fatal(err)
			}
		}, destination.Corrupt, "is 10 bytes, the manifest says"},
		{"registry", reg.URL("backups/missing"), destination.RegistryOptions{InsecureSkipTLSVerify: true}, func(t *testing.T) {
			reg.Delete(t, "backups/missing/blobs/sha256:"+archive)
		}, destination.Complete, "lacks this file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := openDest(t, c.url, c.ro)
			res, err := destination.UploadDir(t.Context(), d, b.Dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.remove(t)
			entries, err := d.List(t.Context())
			if err != nil || len(entries) != 1 || entries[0].State != c.listed {
				t.Errorf("list = %v, %v; want the backup %s", entries, err, c.listed)
			}
			_, err = destination.Verify(t.Context(), d, res.Name, verify.Options{Log: desttest.Log(t)}, nil)
			if exitcode.Of(err) != exitcode.Verify || !strings.Contains(err.Error(), c.says) || strings.Count(err.Error(), d.URL()) != 1 {
				t.Errorf("verify = %v (exit %d), want exit %d saying %q, naming %s once", err, exitcode.Of(err), exitcode.Verify, c.says, d.URL())
			}
			out := filepath.Join(t.TempDir(), "out")
			_, err = destination.Download(t.Context(), d, res.Name, out, nil)
			if exitcode.Of(err) != exitcode.Verify || strings.Count(err.Error(), d.URL()) != 1 {
				t.Errorf("download = %v (exit %d), want exit %d, naming %s once", err, exitcode.Of(err), exitcode.Verify, d.URL())
			}
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("download left %s (%v)", out, err)
			}
		})
	}
}

// testLayoutCommitsOneAtATime: of two uploads to one layout at once, both
// end up listed: containers/image reads index.json when a write begins and
// writes it whole at its end, so a commit reopens the layout under a lock.
// A commit that meets the lock held for longer than the stall timeout
// fails saying so, and passes once the lock is free.
func testLayoutCommitsOneAtATime(t *testing.T, bs []desttest.Backup) {
	dir := filepath.Join(t.TempDir(), "layout")
	first, second := openDest(t, "oci:"+dir, destination.RegistryOptions{}), openDest(t, "oci:"+dir, destination.RegistryOptions{})
	up := putAll(t, first, bs[0])
	if _, err := destination.UploadDir(t.Context(), second, bs[1].Dir, nil); err != nil {
		t.Fatalf("upload while another is open: %v", err)
	}
	if _, err := up.Commit(t.Context(), bs[0].Manifest); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	if entries, err := first.List(t.Context()); err != nil || len(entries) != 2 {
		t.Fatalf("list after two uploads at once = %d backups (%v), want 2", len(entries), err)
	}

	release := holdLayout(t, dir)
	opts := options(t, destination.RegistryOptions{})
	opts.StallTimeout = 200 * time.Millisecond
	third, err := kinds().Open(t.Context(), "oci:"+dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if _, err := destination.UploadDir(t.Context(), third, bs[2].Dir, nil); err == nil || !strings.Contains(err.Error(), "held by another run") {
		t.Errorf("upload while another run holds the layout = %v, want it refused, held by another run", err)
	}
	release()
	if _, err := destination.UploadDir(t.Context(), third, bs[2].Dir, nil); err != nil {
		t.Fatalf("upload once the layout is free: %v", err)
	}
	if entries, err := first.List(t.Context()); err != nil || len(entries) != 3 {
		t.Errorf("list = %d backups (%v), want 3", len(entries), err)
	}
}

// testPruneAttachments: the signature and attestation Tekton Chains stores
// next to a backup (cosign's "sha256-<hex>.sig" and ".att" tags) go with
// the backup prune deletes, and stay with the one it keeps.
func testPruneAttachments(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{Deletes: true})
	d := openDest(t, reg.URL("backups/signed"), destination.RegistryOptions{InsecureSkipTLSVerify: true})
	sys := &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue}
	ref := func(tag string) types.ImageReference {
		ref, err := docker.ParseReference("//" + reg.Host + "/backups/signed:" + tag)
		if err != nil {
			t.Fatal(err)
		}
		return ref
	}
	var tags [][]string // per backup, its attachments' tags
	for _, b := range bs[:2] {
		res, err := destination.UploadDir(t.Context(), d, b.Dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		var mine []string
		for _, suffix := range []string{".sig", ".att"} {
			tag := strings.Replace(res.Digest, ":", "-", 1) + suffix
			attach(t, ref(tag), sys, tag)
			mine = append(mine, tag)
		}
		tags = append(tags, mine)
	}
	decisions, err := destination.Prune(t.Context(), d, destination.Policy{KeepLast: 1}, "", time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(removed(decisions)); n != 1 {
		t.Fatalf("prune removed %d backups, want 1", n)
	}
	for i, want := range []bool{false, true} {
		for _, tag := range tags[i] {
			src, err := ref(tag).NewImageSource(t.Context(), sys)
			if err == nil {
				_, _, err = src.GetManifest(t.Context(), nil)
				src.Close()
			}
			if there := err == nil; there != want {
				t.Errorf("after prune, %s there: %v (%v), want %v", tag, there, err, want)
			}
		}
	}
}

// attach pushes to ref a small manifest, as cosign does a signature.
func attach(t *testing.T, ref types.ImageReference, sys *types.SystemContext, payload string) {
	t.Helper()
	dst, err := ref.NewImageDestination(t.Context(), sys)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	blobs := map[string][]byte{"application/vnd.oci.empty.v1+json": []byte("{}"), "application/vnd.dev.cosign.simplesigning.v1+json": []byte(payload)}
	desc := map[string]string{}
	for media, data := range blobs {
		info, err := dst.PutBlob(t.Context(), bytes.NewReader(data), types.BlobInfo{Size: int64(len(data)), MediaType: media}, none.NoCache, media == "application/vnd.oci.empty.v1+json")
		if err != nil {
			t.Fatal(err)
		}
		desc[media] = fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, media, info.Digest, info.Size)
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}`,
		desc["application/vnd.oci.empty.v1+json"], desc["application/vnd.dev.cosign.simplesigning.v1+json"])
	if err := dst.PutManifest(t.Context(), []byte(m), nil); err != nil {
		t.Fatal(err)
	}
	if err := dst.Commit(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
}
