package oci_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// TestRegistryURL: a docker:// URL that names no repository of a registry
// is a usage error that says what it lacks; one that does opens.
func TestRegistryURL(t *testing.T) {
	tests := []struct {
		url  string
		want string // "" opens
	}{
		{"docker://127.0.0.1:5000/backups/etcd", ""},
		{"docker://registry.example:5000/etcd", ""},
		{"docker://127.0.0.1:5000", "names no repository"},
		{"docker://127.0.0.1:5000/", "names no repository"},
		{"docker:127.0.0.1:5000/etcd", "use docker://HOST[:PORT]/REPO"},
		{"docker://", "use docker://HOST[:PORT]/REPO"},
		{"docker://127.0.0.1:5000/Backups", "must be lowercase: give docker://127.0.0.1:5000/backups"},
		{"docker://Mirror.example.com/OCP/Etcd", "must be lowercase: give docker://Mirror.example.com/ocp/etcd"},
		{"docker://127.0.0.1:5000/Back ups", "invalid reference format"},
		{"docker://127.0.0.1:5000/etcd:latest", "names a tag or digest"},
		{"docker://library/etcd", "names no registry host"},
		{"docker://[::1]:5000/etcd", "an IPv6 address cannot name a registry; give its host name"},
		{"docker://https://registry.example/etcd", "a registry is named without a scheme"},
		{"docker://http://registry.example:5000/etcd", "a registry is named without a scheme"},
		{"docker://registry.example/etcd/backups/", "ends with a slash"},
	}
	for _, tt := range tests {
		checkOpen(t, tt.url, tt.want)
	}
}

// TestGuessRegistry: an image reference given without docker://, as
// upload's IMAGE_URL and podman write one, is taken for a registry's; a
// path, or a name with no registry host, is not.
func TestGuessRegistry(t *testing.T) {
	tests := []struct{ s, want string }{
		{"mirror.example.com:8443/etcd/backups:TAG", "docker://mirror.example.com:8443/etcd/backups:TAG"},
		{"127.0.0.1:5000/etcd@sha256:00", "docker://127.0.0.1:5000/etcd@sha256:00"},
		{"quay.example.com/etcd/backups", "docker://quay.example.com/etcd/backups"},
		{"localhost/etcd", "docker://localhost/etcd"},
		{"backups/etcd", ""},
		{"./backup.d/x", ""},
		{"../site.b/x", ""},
		{"/var/backups/etcd", ""},
		{"mirror.example.com", ""},
		{"mirror.example.com/", ""},
	}
	r := kinds()
	for _, tt := range tests {
		if got := r.Guess(tt.s); got != tt.want {
			t.Errorf("Guess(%q) = %q, want %q", tt.s, got, tt.want)
		}
	}
}

// TestInClusterRegistry: an upload to OpenShift's integrated registry, by
// its service or its default route, warns that the backup goes down with
// the cluster; one to any other registry does not. The warning comes before
// the first request, which here is cut short.
func TestInClusterRegistry(t *testing.T) {
	tests := []struct {
		url  string
		warn bool
	}{
		{"docker://image-registry.openshift-image-registry.svc:5000/etcd/backups", true},
		{"docker://image-registry.openshift-image-registry.svc.cluster.local:5000/etcd/backups", true},
		{"docker://default-route-openshift-image-registry.apps.ocp.example.com/etcd/backups", true},
		{"docker://registry.example.com/openshift-image-registry.svc/backups", false},
		{"docker://mirror.example.com:8443/etcd/backups", false},
	}
	for _, tt := range tests {
		d, logged := openLogged(t, tt.url)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := d.Begin(ctx, &manifest.Backup{Cluster: manifest.Cluster{ID: "c"}, Timestamp: "2026-12-03_090000"}); err == nil {
			t.Errorf("%s: Begin succeeded without a registry", tt.url)
		}
		if warned := strings.Contains(logged.String(), "the cluster's own image registry"); warned != tt.warn {
			t.Errorf("%s: warned %v, want %v; logged:\n%s", tt.url, warned, tt.warn, logged.String())
		}
	}
}

// FuzzRegistryURL: whatever follows docker:, Open either opens a
// repository or refuses with a usage error in one line; it never panics.
func FuzzRegistryURL(f *testing.F) {
	for _, s := range []string{"//127.0.0.1:5000/backups/etcd", "//h", "//h/R", "//h/r:t", "//h/r@sha256:00", "///", "//[::1]:5000/r", "//h/" + strings.Repeat("a/", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rest string) {
		d, err := kinds().Open(t.Context(), "docker:"+rest, options(t, destination.RegistryOptions{}))
		if err == nil {
			d.Close()
			return
		}
		if exitcode.Of(err) != exitcode.Usage || strings.Contains(err.Error(), "\n") {
			t.Errorf("Open(docker:%q) = %v (exit %d), want a usage error in one line", rest, err, exitcode.Of(err))
		}
	})
}

// TestLayoutURL: an oci: path that is no place for a layout is a usage
// error that says why; a directory on mounted media opens.
func TestLayoutURL(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		url  string
		want string // "" opens
	}{
		{"oci:" + dir + "/layout", ""},
		{"oci:" + dir, ""},
		{"oci:", "names no directory"},
		{"oci:" + dir + "/layout:cluster-a", "cannot hold a colon"},
		{"oci:" + dir + "/a:b/layout", "cannot hold a colon"},
		{"oci:" + dir + "/unmounted/layout", "does not exist"},
	}
	for _, tt := range tests {
		checkOpen(t, tt.url, tt.want)
	}
}

// checkOpen checks that url opens, if want is "", or else is refused with
// a usage error in one line that says want.
func checkOpen(t *testing.T, url, want string) {
	t.Helper()
	d, err := kinds().Open(t.Context(), url, options(t, destination.RegistryOptions{}))
	switch {
	case want == "" && err != nil:
		t.Errorf("Open(%q) = %v, want it open", url, err)
	case want == "":
		d.Close()
	case err == nil:
		d.Close()
		t.Errorf("Open(%q) opened, want %q", url, want)
	case exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n"):
		t.Errorf("Open(%q) = %v (exit %d), want exit %d, %q, in one line", url, err, exitcode.Of(err), exitcode.Usage, want)
	}
}

// TestLayoutNearby: a layout path that holds no backup says why it may
// not, where it said only that nothing was stored there: media not
// mounted leaves the directory missing or empty, a path one level too high
// names the layouts below it, and one too deep the layout it is in.
func TestLayoutNearby(t *testing.T) {
	root := t.TempDir()
	for _, dir := range []string{"empty", "media/backups", "layout"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, layout := range []string{"media/backups", "layout"} {
		if err := os.WriteFile(filepath.Join(root, layout, "index.json"), []byte(`{"schemaVersion":2,"manifests":[]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		dir, says string
	}{
		{"missing", "the directory does not exist: is the media mounted?"},
		{"empty", "the directory is empty: is the media mounted?"},
		{"media", "it is not a layout; the layouts below it are oci:" + filepath.Join(root, "media/backups")},
		{"layout", "nothing is stored there"},
		{"layout/blobs", "it is inside the layout oci:" + filepath.Join(root, "layout")},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			url := "oci:" + filepath.Join(root, tt.dir)
			d, err := kinds().Open(t.Context(), url, options(t, destination.RegistryOptions{}))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			_, err = destination.Newest(t.Context(), d, "", desttest.Log(t))
			if want := "no complete backup at " + url + ": " + tt.says; err == nil || err.Error() != want {
				t.Errorf("newest backup at %s = %v, want %q", url, err, want)
			}
		})
	}
}

// TestBackupURL: a BACKUP argument names a backup by its tag, by its
// manifest's digest, or by both; a malformed digest, or no name at all, is
// a usage error in one line that says so. An @ in a layout's path is part
// of the path.
func TestBackupURL(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "usb@site"), 0o700); err != nil {
		t.Fatal(err)
	}
	pin := "@sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		url, dest, name string
		want            string // "" opens
	}{
		{"docker://h.example:5000/etcd/backups:TAG", "docker://h.example:5000/etcd/backups", "TAG", ""},
		{"docker://h.example:5000/etcd/backups" + pin, "docker://h.example:5000/etcd/backups", pin, ""},
		{"docker://h.example:5000/etcd/backups:TAG" + pin, "docker://h.example:5000/etcd/backups", "TAG" + pin, ""},
		{"oci:" + dir + "/layout" + pin, "oci:" + dir + "/layout", pin, ""},
		{"oci:" + dir + "/usb@site:TAG", "oci:" + dir + "/usb@site", "TAG", ""},
		{"oci:" + dir + "/usb@site" + pin, "oci:" + dir + "/usb@site", pin, ""},
		// A layout's snapshot-uri: the blob's file.
		{"oci:" + dir + "/layout/blobs/sha256/" + strings.Repeat("ab", 32), "oci:" + dir + "/layout", pin, ""},
		{"oci:" + dir + "/layout/blobs/sha256/abc", "", "", "names no backup"},
		{"docker://h.example:5000/etcd/backups@sha256:abc", "", "", `names a malformed digest "sha256:abc"`},
		{"docker://h.example:5000/etcd/backups@sha256:", "", "", "names a malformed digest"},
		{"docker://h.example:5000/etcd/backups", "", "", "names no backup: use docker://HOST[:PORT]/REPO:TAG or docker://HOST[:PORT]/REPO@DIGEST"},
		{"oci:" + dir + "/layout", "", "", "names no backup: use oci:PATH:TAG or oci:PATH@DIGEST"},
		{"oci:" + pin, "", "", "names no backup"},
	}
	for _, tt := range tests {
		d, name, err := kinds().OpenBackup(t.Context(), tt.url, options(t, destination.RegistryOptions{}))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("OpenBackup(%q) = %v, want %s in %s", tt.url, err, tt.name, tt.dest)
		case tt.want == "":
			if d.URL() != tt.dest || name != tt.name {
				t.Errorf("OpenBackup(%q) = %s in %s, want %s in %s", tt.url, name, d.URL(), tt.name, tt.dest)
			}
			d.Close()
		case err == nil:
			d.Close()
			t.Errorf("OpenBackup(%q) opened %s in %s, want %q", tt.url, name, d.URL(), tt.want)
		case exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n"):
			t.Errorf("OpenBackup(%q) = %v (exit %d), want exit %d, %q, in one line", tt.url, err, exitcode.Of(err), exitcode.Usage, tt.want)
		}
	}
}

// FuzzBackupURL: whatever BACKUP argument follows docker:, OpenBackup
// either names a backup in a repository or refuses with a usage error in
// one line; a name that pins a digest pins a well-formed one.
func FuzzBackupURL(f *testing.F) {
	for _, s := range []string{"//h:5000/r:t", "//h/r@sha256:" + strings.Repeat("0", 64), "//h/r:t@sha256:" + strings.Repeat("0", 64), "//h/r@sha256:00", "//h/r@", "//h/r@x:y", "//h@sha256:/r:t", "//h/r:@sha512:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rest string) {
		d, name, err := kinds().OpenBackup(t.Context(), "docker:"+rest, options(t, destination.RegistryOptions{}))
		if err != nil {
			if exitcode.Of(err) != exitcode.Usage || strings.Contains(err.Error(), "\n") {
				t.Errorf("OpenBackup(docker:%q) = %v (exit %d), want a usage error in one line", rest, err, exitcode.Of(err))
			}
			return
		}
		defer d.Close()
		tag, pin, pinned := strings.Cut(name, "@")
		if pinned && digest.Digest(pin).Validate() != nil || !pinned && tag == "" {
			t.Errorf("OpenBackup(docker:%q) named %q", rest, name)
		}
	})
}
