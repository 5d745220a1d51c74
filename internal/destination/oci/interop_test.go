//go:build containers_image_openpgp

// containers/image's signature package, which copy.Image needs, links
// gpgme unless built with containers_image_openpgp, as make test does.

package oci_test

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/directory"
	"go.podman.io/image/v5/docker"
	cimanifest "go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/verify"
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
	out := t.TempDir()
	dst, err := directory.NewReference(out)
	if err != nil {
		t.Fatal(err)
	}
	copyImage(t, dockerRef(t, reg, "backups/interop:"+res.Name), dst, "", nil)
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

// TestConvertedImage: a backup in the image form that a mirroring copy
// converted keeps its tar, compressed, and loses its annotations: a Docker
// schema 2 image (skopeo copy --format v2s2, for a mirror that takes only
// those) has it gzipped, a copy recompressed with zstd has that. Each is
// listed complete, downloads and verifies, where it was called corrupt and
// download --latest passed it over; and the layer's bytes changed on the
// mirror are a damaged backup (exit 4), not a failed read.
func TestConvertedImage(t *testing.T) {
	bs := desttest.Save(t)
	reg := ocitest.Start(t, ocitest.Options{})
	d := openDest(t, reg.URL("backups/image"), destination.RegistryOptions{InsecureSkipTLSVerify: true, Format: destination.FormatImage})
	res, err := destination.UploadDir(t.Context(), d, bs[1].Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, repo, manifestType string
		compress                 *compression.Algorithm
		layerType                string
	}{
		{"Docker image", "backups/v2s2", cimanifest.DockerV2Schema2MediaType, nil, cimanifest.DockerV2Schema2LayerMediaType},
		{"zstd", "backups/zstd", "", &compression.Zstd, imgspecv1.MediaTypeImageLayerZstd},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mirror := copyImage(t, dockerRef(t, reg, "backups/image:"+res.Name), dockerRef(t, reg, c.repo+":"+res.Name), c.manifestType, c.compress)
			var m imgspecv1.Manifest
			if err := json.Unmarshal(mirror, &m); err != nil || len(m.Layers) != 1 || m.Layers[0].MediaType != c.layerType || (c.manifestType != "" && len(m.Annotations) != 0) {
				t.Fatalf("the copy is not a converted, compressed image (%v): %s", err, mirror)
			}
			md := openDest(t, reg.URL(c.repo), destination.RegistryOptions{InsecureSkipTLSVerify: true})
			entries, err := md.List(t.Context())
			if err != nil || len(entries) != 1 || entries[0].State != destination.Complete || !entries[0].Ours || entries[0].ClusterID != bs[1].Manifest.ClusterKey() {
				t.Fatalf("list of the mirror = %+v, %v; want the one backup, complete and written by etcd-backup", entries, err)
			}
			dir := filepath.Join(t.TempDir(), "restore")
			if _, err := destination.Download(t.Context(), md, res.Name, dir, nil); err != nil {
				t.Fatalf("download of the converted backup: %v", err)
			}
			for _, f := range append(bs[1].Manifest.Files, manifest.File{Name: manifest.FileName}) {
				want, _ := os.ReadFile(filepath.Join(bs[1].Dir, f.Name))
				got, err := os.ReadFile(filepath.Join(dir, f.Name))
				if err != nil || string(got) != string(want) {
					t.Errorf("downloaded %s differs from the one saved (%v)", f.Name, err)
				}
			}
			if _, err := destination.Verify(t.Context(), md, res.Name, verify.Options{Log: desttest.Log(t)}, nil); err != nil {
				t.Errorf("verify of the converted backup: %v", err)
			}

			// The layer's bytes changed on the mirror, as they are served.
			p := reg.NewProxy(t)
			p.Fault = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+m.Layers[0].Digest.String()) {
					return false
				}
				rec := httptest.NewRecorder()
				reg.Handler.ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				body[len(body)/2] ^= 0xff
				maps.Copy(w.Header(), rec.Header())
				w.WriteHeader(rec.Code)
				w.Write(body)
				return true
			}
			pd := openDest(t, "docker://"+p.Host+"/"+c.repo, destination.RegistryOptions{InsecureSkipTLSVerify: true})
			dir = filepath.Join(t.TempDir(), "restore")
			_, err = destination.Download(t.Context(), pd, res.Name, dir, nil)
			if exitcode.Of(err) != exitcode.Verify {
				t.Errorf("download of a converted backup whose layer changed = %v (exit %d), want exit %d", err, exitcode.Of(err), exitcode.Verify)
			}
			if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("the failed download left %s (%v)", dir, serr)
			}
		})
	}
}

// TestRegistryNearby: a repository that holds no backup says whether the
// registry knows it (a mistyped name) or it holds only other images, where
// it said only that nothing was stored there.
func TestRegistryNearby(t *testing.T) {
	bs := desttest.Save(t)
	reg := ocitest.Start(t, ocitest.Options{})
	d := openDest(t, reg.URL("backups/cluster"), destination.RegistryOptions{InsecureSkipTLSVerify: true})
	res, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	copyImage(t, dockerRef(t, reg, "backups/cluster:"+res.Name), dockerRef(t, reg, "backups/other:v1"), "", nil)
	tests := []struct {
		repo, says string
	}{
		{"backups/clustr", "the registry has no repository backups/clustr: is its name mistyped?"},
		{"backups/other", "none of the repository's tags (1) names a backup of this tool"},
	}
	for _, tt := range tests {
		t.Run(tt.repo, func(t *testing.T) {
			url := reg.URL(tt.repo)
			_, err := destination.Newest(t.Context(), openDest(t, url, destination.RegistryOptions{InsecureSkipTLSVerify: true}), "", desttest.Log(t))
			if want := "no complete backup at " + url + ": " + tt.says; err == nil || err.Error() != want {
				t.Errorf("newest backup at %s = %v, want %q", url, err, want)
			}
		})
	}
}

// dockerRef is the reference of name (REPO:TAG) in reg.
func dockerRef(t *testing.T, reg *ocitest.Registry, name string) types.ImageReference {
	t.Helper()
	ref, err := docker.ParseReference("//" + reg.Host + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// copyImage copies src to dst with containers/image's own copy.Image, as
// skopeo does, converting the manifest to manifestType and the layers to
// compress where given, and returns the manifest it wrote.
func copyImage(t *testing.T, src, dst types.ImageReference, manifestType string, compress *compression.Algorithm) []byte {
	t.Helper()
	policy, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer policy.Destroy()
	sys := &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue, BlobInfoCacheDir: t.TempDir()}
	dsys := *sys
	dsys.CompressionFormat = compress
	m, err := copy.Image(t.Context(), policy, dst, src, &copy.Options{SourceCtx: sys, DestinationCtx: &dsys, ForceManifestMIMEType: manifestType, ForceCompressionFormat: compress != nil})
	if err != nil {
		t.Fatalf("copy.Image %s to %s: %v", transports.ImageName(src), transports.ImageName(dst), err)
	}
	return m
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
