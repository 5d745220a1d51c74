//go:build containers_image_openpgp

// containers/image's signature package, which copy.Image needs, links
// gpgme unless built with containers_image_openpgp, as make test does.

package oci_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/directory"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// TestCopyImageInterop reads back, with stock tools, what upload pushed in
// either form.
func TestCopyImageInterop(t *testing.T) {
	bs := desttest.Save(t)
	for _, format := range []string{destination.FormatArtifact, destination.FormatImage} {
		t.Run(format, func(t *testing.T) { testCopyImage(t, bs, format) })
	}
}

// testCopyImage reads what upload pushed with containers/image's own
// copy.Image into a dir: layout, not through this package, and compares
// every blob with the local files; for the image form, GNU tar unpacks the
// layer into the directory cluster-restore.sh takes.
func testCopyImage(t *testing.T, bs []desttest.Backup, format string) {
	reg := ocitest.Start(t, ocitest.Options{})
	d := openDest(t, reg.URL("backups/interop"), destination.RegistryOptions{InsecureSkipTLSVerify: true, Format: format})
	res, err := destination.UploadDir(t.Context(), d, bs[1].Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, err := docker.ParseReference("//" + reg.Host + "/backups/interop:" + res.Name)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	dst, err := directory.NewReference(out)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer policy.Destroy()
	sys := &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue, BlobInfoCacheDir: t.TempDir()}
	if _, err := copy.Image(t.Context(), policy, dst, src, &copy.Options{SourceCtx: sys, DestinationCtx: sys}); err != nil {
		t.Fatalf("copy.Image %s: %v", res.URL, err)
	}
	if format == destination.FormatImage {
		untarred := untarLayer(t, out)
		for _, f := range append(bs[1].Manifest.Files, manifest.File{Name: manifest.FileName}) {
			want, _ := os.ReadFile(filepath.Join(bs[1].Dir, f.Name))
			got, err := os.ReadFile(filepath.Join(untarred, "backup", f.Name))
			if err != nil || string(got) != string(want) {
				t.Errorf("backup/%s from the image's layer differs from the local file (%v)", f.Name, err)
			}
		}
		return
	}
	for _, f := range append(bs[1].Manifest.Files, manifest.File{Name: manifest.FileName}) {
		want, err := os.ReadFile(filepath.Join(bs[1].Dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, digest.FromBytes(want).Encoded()))
		if errors.Is(err, os.ErrNotExist) {
			t.Errorf("copy.Image brought no blob with the content of %s", f.Name)
			continue
		}
		if err != nil || string(got) != string(want) {
			t.Errorf("the copied blob of %s differs from the local file (%v)", f.Name, err)
		}
	}
}

// untarLayer unpacks, with GNU tar, the one layer of the image that
// copy.Image wrote into the dir: layout out.
func untarLayer(t *testing.T, out string) string {
	t.Helper()
	tarCmd, err := exec.LookPath("tar")
	if err != nil {
		t.Fatal("tar is not installed; .ci/run installs it")
	}
	raw, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m imgspecv1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("manifest.json: %v, %d layers; want one", err, len(m.Layers))
	}
	dir := t.TempDir()
	if msg, err := exec.Command(tarCmd, "-C", dir, "-xf", filepath.Join(out, m.Layers[0].Digest.Encoded())).CombinedOutput(); err != nil {
		t.Fatalf("tar -xf: %v: %s", err, msg)
	}
	return dir
}
