package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
)

// TestDestinationCommands runs every command against each kind of OCI
// destination: an OCI layout, a registry over plain HTTP, and a registry
// over TLS with a password, reached with --authfile and --cert-dir.
func TestDestinationCommands(t *testing.T) {
	dir, b := savedBackup(t, 200)
	tag := oci.Tag(b)
	plain := ocitest.Start(t, ocitest.Options{Deletes: true})
	secure := ocitest.Start(t, ocitest.Options{TLS: true, Deletes: true})
	cases := []struct {
		name, dest, imageURL string
		flags                []string
	}{
		{"layout", "oci:" + filepath.Join(t.TempDir(), "layout"), "", nil},
		{"registry over HTTP", plain.URL("backups/etcd"), plain.Host + "/backups/etcd:" + tag, []string{"--tls-verify=false"}},
		{"registry over TLS", secure.URL("backups/etcd"), secure.Host + "/backups/etcd:" + tag, []string{"--authfile", secure.AuthFile, "--cert-dir", secure.CertDir}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run := func(args ...string) (string, string) {
				t.Helper()
				argv := append([]string{args[0]}, append(c.flags, args[1:]...)...)
				code, stdout, stderr := cli(t, nil, argv...)
				if code != 0 {
					t.Fatalf("etcd-backup %s: exit %d\n%s", strings.Join(argv, " "), code, stderr)
				}
				if secure.Password != "" && strings.Contains(stdout+stderr, secure.Password) {
					t.Errorf("etcd-backup %s printed the registry password", argv[0])
				}
				return stdout, stderr
			}
			results := t.TempDir()
			run("upload", "--results-dir", results, dir, c.dest)
			if got := readResult(t, results, "IMAGE_URL"); got != c.imageURL {
				t.Errorf("IMAGE_URL = %q, want %q", got, c.imageURL)
			}
			if digest := readResult(t, results, "IMAGE_DIGEST"); c.imageURL != "" && !strings.HasPrefix(digest, "sha256:") {
				t.Errorf("IMAGE_DIGEST = %q", digest)
			} else if c.imageURL != "" {
				// As Tekton Chains records the backup: by digest, with
				// its tag or without.
				if _, stderr := run("verify", c.dest+"@"+digest); !strings.Contains(stderr, " is "+c.dest+":"+tag) {
					t.Errorf("verify by digest does not name the backup it found:\n%s", stderr)
				}
				run("verify", "docker://"+c.imageURL+"@"+digest)
			}
			// A file's URI names the backup that holds it, the layout's
			// given as a path too.
			snapshotURI := readResult(t, results, "snapshot-uri")
			if c.imageURL == "" {
				code, _, stderr := cli(t, nil, "verify", snapshotURI)
				if want := "as a destination, give oci:" + snapshotURI; code != exitcode.Usage || !strings.Contains(stderr, want) {
					t.Errorf("verify %s: exit %d, want %d saying %q:\n%s", snapshotURI, code, exitcode.Usage, want, stderr)
				}
				snapshotURI = "oci:" + snapshotURI
			} else {
				snapshotURI = "docker://" + snapshotURI
			}
			argv := append(append([]string{"verify"}, c.flags...), snapshotURI)
			if code, _, stderr := cli(t, nil, argv...); code != exitcode.Usage || !strings.Contains(stderr, "is one of the files of "+c.dest+":"+tag) {
				t.Errorf("verify %s: exit %d, want %d naming the backup:\n%s", snapshotURI, code, exitcode.Usage, stderr)
			}
			if _, stderr := run("upload", dir, c.dest); !strings.Contains(stderr, "already stored") {
				t.Errorf("a second upload did not find the backup stored:\n%s", stderr)
			}
			stdout, _ := run("list", c.dest)
			if !strings.Contains(stdout, tag) || !strings.Contains(stdout, "complete") {
				t.Errorf("list does not show %s complete:\n%s", tag, stdout)
			}
			// The manifest's digest, listed, names the backup too.
			stdout, _ = run("list", "--output", "json", c.dest)
			var rows []listed
			if err := json.Unmarshal([]byte(stdout), &rows); err != nil || len(rows) != 1 || !strings.HasPrefix(rows[0].Digest, "sha256:") {
				t.Fatalf("list --output json: %v, want one backup with its digest:\n%s", err, stdout)
			}
			if digest := readResult(t, results, "IMAGE_DIGEST"); c.imageURL != "" && rows[0].Digest != digest {
				t.Errorf("list gives the digest %s, upload gave IMAGE_DIGEST %s", rows[0].Digest, digest)
			}
			run("verify", c.dest+"@"+rows[0].Digest)
			down := filepath.Join(t.TempDir(), "down")
			run("download", "--latest", c.dest, down)
			for _, f := range append(b.Files, manifest.File{Name: manifest.FileName}) {
				want, _ := os.ReadFile(filepath.Join(dir, f.Name))
				if got, err := os.ReadFile(filepath.Join(down, f.Name)); err != nil || string(got) != string(want) {
					t.Errorf("downloaded %s differs from the saved one (%v)", f.Name, err)
				}
			}
			run("verify", "--restore", "--scratch-dir", t.TempDir(), c.dest+":"+tag)
			run("verify", "--latest", c.dest)
			stdout, _ = run("prune", "--keep-last", "1", c.dest)
			if !strings.Contains(stdout, "keep") {
				t.Errorf("prune output:\n%s", stdout)
			}
			if _, stderr := run("prune", "--keep-last", "1", "--cluster-id", "other", c.dest); !strings.Contains(stderr, "no backups of cluster other at ") {
				t.Errorf("prune of a cluster with no backups there said nothing of it:\n%s", stderr)
			}
		})
	}
	t.Run("image form", func(t *testing.T) {
		dest := plain.URL("backups/images")
		code, _, stderr := cli(t, nil, "upload", "--tls-verify=false", "--oci-format", "image", dir, dest)
		if code != 0 {
			t.Fatalf("upload --oci-format image: exit %d\n%s", code, stderr)
		}
		down := filepath.Join(t.TempDir(), "down")
		if code, _, stderr := cli(t, nil, "download", "--tls-verify=false", dest+":"+tag, down); code != 0 {
			t.Fatalf("download of the image form: exit %d\n%s", code, stderr)
		}
		for _, f := range append(b.Files, manifest.File{Name: manifest.FileName}) {
			want, _ := os.ReadFile(filepath.Join(dir, f.Name))
			if got, err := os.ReadFile(filepath.Join(down, f.Name)); err != nil || string(got) != string(want) {
				t.Errorf("downloaded %s differs from the saved one (%v)", f.Name, err)
			}
		}
		code, _, stderr = cli(t, nil, "upload", "--oci-format", "image", "--encrypt-to", desttest.AgeKey(t).Public, dir, "oci:"+t.TempDir())
		if code != exitcode.Usage || !strings.Contains(stderr, "--oci-format artifact") {
			t.Errorf("encrypted image form: exit %d, want %d:\n%s", code, exitcode.Usage, stderr)
		}
	})
	// Settings for another kind of destination, or none, are refused
	// before anything is opened.
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"GCS flags elsewhere", []string{"--kms-key", "projects/p/locations/l/keyRings/r/cryptoKeys/k", dir, "oci:" + t.TempDir()}, "applies to gs://"},
		{"unknown OCI format", []string{"--oci-format", "tarball", dir, "oci:" + t.TempDir()}, `want "artifact" or "image"`},
		{"OCI format for Cloud Storage", []string{"--oci-format", "image", dir, "gs://bucket/etcd"}, "applies to docker:// and oci:"},
		{"a layout that is a file", []string{dir, "oci:" + filepath.Join(dir, manifest.FileName)}, "is not a directory (it, or one above it, is a file)"},
		{"a layout in a directory that does not exist", []string{dir, "oci:" + filepath.Join(t.TempDir(), "unmounted", "etcd")}, "unmounted does not exist: give the path of mounted media"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := cli(t, nil, append([]string{"upload"}, c.args...)...)
			if code != exitcode.Usage || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, want %d saying %q:\n%s", code, exitcode.Usage, c.want, stderr)
			}
		})
	}
}

// TestRegistrySettings: a registry reached with settings that cannot work
// is a usage error (exit 2) in one line that names what to give, at the
// first attempt: plain HTTP without --tls-verify=false, a certificate no
// trusted CA vouches for or for another name, no credentials, wrong ones
// (named as the auth file that holds them).
func TestRegistrySettings(t *testing.T) {
	// No credentials from the machine running the test.
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	t.Setenv("REGISTRY_AUTH_FILE", "")
	plain := ocitest.Start(t, ocitest.Options{})
	secure := ocitest.Start(t, ocitest.Options{TLS: true})
	wrong := ocitest.WriteAuthFile(t, secure.Host, "backup", "not-the-password")
	// The same registry by a name its certificate does not hold.
	byName := strings.Replace(secure.Host, "127.0.0.1", "localhost", 1)
	byNameAuth := ocitest.WriteAuthFile(t, byName, "backup", secure.Password)
	missing := filepath.Join(t.TempDir(), "missing")
	ca, err := os.ReadFile(filepath.Join(secure.CertDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	notJSON, notPEM, keyless, tlsSecret, secretDir := filepath.Join(t.TempDir(), "auth.json"), t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	large := filepath.Join(t.TempDir(), "auth.json")
	for path, data := range map[string][]byte{
		notJSON:                               []byte("auths: {}\n"),
		large:                                 append(bytes.Repeat([]byte(" "), 1<<20), "{}"...),
		filepath.Join(notPEM, "ca.crt"):       []byte("not a certificate\n"),
		filepath.Join(keyless, "ca.crt"):      ca,
		filepath.Join(keyless, "client.cert"): ca,
		// A kubernetes.io/dockerconfigjson Secret's mount path.
		filepath.Join(secretDir, ".dockerconfigjson"): []byte(`{"auths":{}}`),
		// A kubernetes.io/tls Secret mounted as it is.
		filepath.Join(tlsSecret, "ca.crt"):  ca,
		filepath.Join(tlsSecret, "tls.crt"): ca,
		filepath.Join(tlsSecret, "tls.key"): []byte("a key\n"),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir, _ := savedBackup(t, 50)
	cases := []struct {
		name string
		args []string
		env  string // $REGISTRY_AUTH_FILE
		want string
	}{
		{"plain HTTP, TLS verified", []string{"list", plain.URL("backups/etcd")}, "", "--tls-verify=false"},
		{"plain HTTP, upload", []string{"upload", dir, plain.URL("backups/etcd")}, "", "--tls-verify=false"},
		{"no CA for the certificate", []string{"list", "--authfile", secure.AuthFile, secure.URL("backups/etcd")}, "", "--cert-dir"},
		{"a certificate for another name", []string{"list", "--cert-dir", secure.CertDir, "--authfile", byNameAuth, "docker://" + byName + "/backups/etcd"}, "", "as its certificate does"},
		{"no credentials", []string{"list", "--cert-dir", secure.CertDir, secure.URL("backups/etcd")}, "", "got none it accepts: give --authfile"},
		{"no credentials, upload", []string{"upload", "--cert-dir", secure.CertDir, dir, secure.URL("backups/etcd")}, "", "got none it accepts: give --authfile"},
		{"wrong credentials", []string{"list", "--cert-dir", secure.CertDir, "--authfile", wrong, secure.URL("backups/etcd")}, "", "refuses the credentials that --authfile " + wrong + " holds"},
		{"wrong credentials, upload", []string{"upload", "--cert-dir", secure.CertDir, dir, secure.URL("backups/etcd")}, wrong, "refuses the credentials that $REGISTRY_AUTH_FILE " + wrong + " holds"},
		{"--authfile missing", []string{"list", "--cert-dir", secure.CertDir, "--authfile", missing, secure.URL("backups/etcd")}, "", "--authfile: open " + missing},
		{"$REGISTRY_AUTH_FILE missing", []string{"upload", "--cert-dir", secure.CertDir, dir, secure.URL("backups/etcd")}, missing, "$REGISTRY_AUTH_FILE: open " + missing},
		{"--authfile a Secret's mount path", []string{"list", "--cert-dir", secure.CertDir, "--authfile", secretDir, secure.URL("backups/etcd")}, "", "is a directory; give the file in it, " + filepath.Join(secretDir, ".dockerconfigjson")},
		{"--authfile over 1 MiB", []string{"list", "--cert-dir", secure.CertDir, "--authfile", large, secure.URL("backups/etcd")}, "", large + " is over 1024 KiB: not an auth file"},
		{"--authfile not JSON", []string{"list", "--cert-dir", secure.CertDir, "--authfile", notJSON, secure.URL("backups/etcd")}, "", "is not a JSON object"},
		{"--cert-dir the CA file", []string{"list", "--cert-dir", filepath.Join(secure.CertDir, "ca.crt"), "--authfile", secure.AuthFile, secure.URL("backups/etcd")}, "", "ca.crt is a file: give the directory that holds ca.crt (and client.cert, client.key), as /etc/containers/certs.d/HOST/ does, e.g. " + secure.CertDir},
		{"--cert-dir missing", []string{"list", "--cert-dir", missing, "--authfile", secure.AuthFile, secure.URL("backups/etcd")}, "", "--cert-dir: open " + missing},
		{"--cert-dir with a ca.crt that is no certificate", []string{"list", "--cert-dir", notPEM, "--authfile", secure.AuthFile, secure.URL("backups/etcd")}, "", "holds no PEM certificate"},
		{"--cert-dir with a client certificate and no key", []string{"list", "--cert-dir", keyless, "--authfile", secure.AuthFile, secure.URL("backups/etcd")}, "", "client.key"},
		{"--cert-dir with a kubernetes.io/tls Secret as it is", []string{"list", "--cert-dir", tlsSecret, "--authfile", secure.AuthFile, secure.URL("backups/etcd")}, "", "mount a kubernetes.io/tls Secret with items tls.crt as client.cert and tls.key as client.key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("REGISTRY_AUTH_FILE", c.env)
			code, _, stderr := cli(t, nil, c.args...)
			if code != exitcode.Usage || !strings.Contains(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("etcd-backup %s: exit %d, want %d and one line naming %s:\n%s", strings.Join(c.args, " "), code, exitcode.Usage, c.want, stderr)
			}
		})
	}
}

// TestRegistryLegacyAuthFile: the .dockercfg of a kubernetes.io/dockercfg
// Secret (the type OpenShift makes for each service account) holds the
// same credentials as a .dockerconfigjson without its "auths" wrapper;
// given as --authfile or $REGISTRY_AUTH_FILE, it is read as such.
func TestRegistryLegacyAuthFile(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	secure := ocitest.Start(t, ocitest.Options{TLS: true})
	data, err := os.ReadFile(secure.AuthFile)
	if err != nil {
		t.Fatal(err)
	}
	var config struct {
		Auths json.RawMessage `json:"auths"`
	}
	if err := json.Unmarshal(data, &config); err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(t.TempDir(), ".dockercfg")
	if err := os.WriteFile(legacy, config.Auths, 0o600); err != nil {
		t.Fatal(err)
	}
	dir, _ := savedBackup(t, 10)
	for _, c := range []struct {
		name, flag, env string
	}{
		{"--authfile", legacy, ""},
		{"$REGISTRY_AUTH_FILE", "", legacy},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("REGISTRY_AUTH_FILE", c.env)
			args := []string{"upload", "--cert-dir", secure.CertDir}
			if c.flag != "" {
				args = append(args, "--authfile", c.flag)
			}
			if code, _, stderr := cli(t, nil, append(args, dir, secure.URL("backups/legacy"))...); code != 0 {
				t.Errorf("upload with a .dockercfg auth file: exit %d\n%s", code, stderr)
			}
		})
	}
}

// TestOCINoSuchBackup: a tag that names nothing is a mistyped URL, exit 2
// naming the nearest backups, not exit 4 (a backup that is not usable), as
// for Cloud Storage.
func TestOCINoSuchBackup(t *testing.T) {
	dir, b := savedBackup(t, 10)
	reg := ocitest.Start(t, ocitest.Options{})
	for _, d := range []struct {
		dest  string
		flags []string
	}{
		{"oci:" + filepath.Join(t.TempDir(), "layout"), nil},
		{reg.URL("backups/etcd"), []string{"--tls-verify=false"}},
	} {
		if code, _, stderr := cli(t, nil, append(append([]string{"upload"}, d.flags...), dir, d.dest)...); code != 0 {
			t.Fatalf("upload to %s: exit %d\n%s", d.dest, code, stderr)
		}
		cluster := strings.Split(oci.Tag(b), "_")[0]
		tests := []struct {
			args []string
			want string
		}{
			{[]string{"verify", d.dest + ":" + cluster + "_2001-01-01_000000-000000000000"}, "the nearest are " + d.dest + ":" + oci.Tag(b)},
			{[]string{"download", d.dest + ":" + cluster + "_2001-01-01_000000-000000000000", filepath.Join(t.TempDir(), "out")}, "the nearest are " + d.dest + ":" + oci.Tag(b)},
			{[]string{"verify", d.dest + ":other-cluster_" + b.Timestamp + "-000000000000"}, "there is no backup of cluster other-cluster in " + d.dest},
			{[]string{"verify", d.dest + ":latest"}, "its tags are <cluster-id>_<ts>"},
		}
		for _, tt := range tests {
			args := append(append([]string{tt.args[0]}, d.flags...), tt.args[1:]...)
			code, _, stderr := cli(t, nil, args...)
			if code != exitcode.Usage || !strings.Contains(stderr, "no such backup") || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("%v: exit %d, want %d with %q in one line:\n%s", args, code, exitcode.Usage, tt.want, stderr)
			}
		}
	}
}

// uploadedLayout uploads the backups desttest.Save takes to a new layout.
func uploadedLayout(t *testing.T) ([]desttest.Backup, string) {
	t.Helper()
	bs := desttest.Save(t)
	layout := filepath.Join(t.TempDir(), "layout")
	for _, b := range bs {
		if code, _, stderr := cli(t, nil, "upload", b.Dir, "oci:"+layout); code != 0 {
			t.Fatalf("upload: exit %d\n%s", code, stderr)
		}
	}
	return bs, layout
}

// TestFileTooLarge: a file system that cannot hold a file this large
// (FAT's 4 GiB; here a file size limit on the process) is told at once,
// exit 2, with what to do, and leaves nothing. An upload to a layout is not
// retried, which would write the medium full each time; a trial restore
// does not call the backup unusable (exit 4).
func TestFileTooLarge(t *testing.T) {
	bs, layout := uploadedLayout(t)
	b := bs[0]
	limit := b.Manifest.File(manifest.KindSnapshot).Size / 2
	if res := b.Manifest.File(manifest.KindResources); res.Size >= limit {
		t.Fatalf("the archive (%d bytes) must fit under the limit (%d bytes)", res.Size, limit)
	}
	newLayout := filepath.Join(t.TempDir(), "layout")
	down := filepath.Join(t.TempDir(), "down")
	scratch := t.TempDir()
	tests := []struct {
		name string
		args []string
		left func() string
	}{
		{"upload to a layout", []string{"upload", b.Dir, "oci:" + newLayout}, func() string {
			if _, stdout, _ := cli(t, nil, "list", "oci:"+newLayout); strings.Contains(stdout, oci.Tag(b.Manifest)) {
				return stdout
			}
			return ""
		}},
		{"download", []string{"download", "oci:" + layout + ":" + oci.Tag(b.Manifest), down}, func() string {
			if _, err := os.Stat(down); !errors.Is(err, fs.ErrNotExist) {
				return down
			}
			return ""
		}},
		{"trial restore", []string{"verify", "--restore", "--scratch-dir", scratch, b.Dir}, func() string {
			if entries, _ := os.ReadDir(scratch); len(entries) > 0 {
				return entries[0].Name()
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := selfCommand(t.Context(), tt.args...)
			cmd.Env = append(cmd.Env, fmt.Sprintf("ETCD_BACKUP_TEST_FSIZE=%d", limit))
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitcode.Usage || !strings.Contains(string(out), "cannot hold a file this large") || strings.Contains(string(out), "retrying") {
				t.Fatalf("%v, want exit %d at once, saying the file system cannot hold the file:\n%s", err, exitcode.Usage, out)
			}
			if left := tt.left(); left != "" {
				t.Errorf("left behind: %s", left)
			}
		})
	}
}

// TestLatestSkipsBad: in a layout whose newest backup's snapshot changed
// where it rests, download --latest takes the next newest backup and says
// which it passed over and why; verify --latest, the scheduled check,
// fails on the newest (exit 4) and names it, so that it alerts.
func TestLatestSkipsBad(t *testing.T) {
	bs, layout := uploadedLayout(t)
	dest := "oci:" + layout
	newest := bs[len(bs)-1]
	for _, b := range bs {
		if oci.Tag(b.Manifest) > oci.Tag(newest.Manifest) && b.Manifest.Timestamp == newest.Manifest.Timestamp {
			newest = b
		}
	}
	newestURL := dest + ":" + oci.Tag(newest.Manifest)
	if code, _, stderr := cli(t, nil, "verify", "--latest", dest); code != 0 || !strings.Contains(stderr, newestURL) {
		t.Fatalf("verify --latest: exit %d, want %s verified:\n%s", code, newestURL, stderr)
	}
	desttest.FlipByte(t, filepath.Join(layout, "blobs", "sha256", newest.Manifest.File(manifest.KindSnapshot).SHA256))

	down := filepath.Join(t.TempDir(), "down")
	code, _, stderr := cli(t, nil, "download", "--latest", dest, down)
	if code != 0 || !strings.Contains(stderr, "skipping "+newestURL) || !strings.Contains(stderr, "does not match") {
		t.Errorf("download --latest with a changed newest backup: exit %d, want 0, the newest skipped and why:\n%s", code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(down, manifest.FileName)); strings.Contains(string(got), newest.Manifest.File(manifest.KindSnapshot).SHA256) {
		t.Error("download --latest fetched the changed newest backup")
	}
	code, _, stderr = cli(t, nil, "verify", "--latest", dest)
	if code != exitcode.Verify || !strings.Contains(stderr, newestURL) || strings.Contains(stderr, "skipping") {
		t.Errorf("verify --latest with a changed newest backup: exit %d, want %d naming it, nothing skipped:\n%s", code, exitcode.Verify, stderr)
	}
}

// TestDownloadAgain: download into a directory that holds the backup
// already, from an earlier run, checks that copy and succeeds, where it
// refused the directory as not empty. A copy that fails its check is the
// copy's fault: exit 2, the directory as it was, and the stored backup
// not passed over for an older one. Another backup there is refused.
func TestDownloadAgain(t *testing.T) {
	bs, layout := uploadedLayout(t)
	dest := "oci:" + layout
	down := filepath.Join(t.TempDir(), "down")
	if code, _, stderr := cli(t, nil, "download", "--latest", dest, down); code != 0 {
		t.Fatalf("download --latest: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := cli(t, nil, "download", "--latest", dest, down); code != 0 || !strings.Contains(stderr, down+" holds this backup already, from an earlier download: checking it there") {
		t.Errorf("download --latest again: exit %d, want 0, the copy there checked:\n%s", code, stderr)
	}
	b := readManifest(t, down)
	archive := filepath.Join(down, b.File(manifest.KindResources).Name)
	f, err := os.OpenFile(archive, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("x"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before := dirNames(t, down)
	code, _, stderr := cli(t, nil, "download", "--latest", dest, down)
	if code != exitcode.Usage || !strings.Contains(stderr, "empty "+down+" and download again") || strings.Contains(stderr, "skipping") {
		t.Errorf("download --latest again over a damaged copy: exit %d, want %d, nothing skipped:\n%s", code, exitcode.Usage, stderr)
	}
	if got := dirNames(t, down); !slices.Equal(got, before) {
		t.Errorf("download directory after the refusal holds %v, want %v", got, before)
	}
	other := "oci:" + layout + ":" + oci.Tag(bs[0].Manifest)
	if code, _, stderr := cli(t, nil, "download", other, down); code != exitcode.Usage || !strings.Contains(stderr, "is not empty") {
		t.Errorf("download of another backup into %s: exit %d, want %d, not empty:\n%s", down, code, exitcode.Usage, stderr)
	}
}

// TestDownloadRestoreLine: the line that says how to restore names DIR by
// its absolute path, whatever was given.
func TestDownloadRestoreLine(t *testing.T) {
	_, layout := uploadedLayout(t)
	cwd := t.TempDir()
	t.Chdir(cwd)
	code, _, stderr := cli(t, nil, "download", "--latest", "oci:"+layout, "restore")
	if want := "restore with: cluster-restore.sh " + filepath.Join(cwd, "restore") + " "; code != 0 || !strings.Contains(stderr, want) {
		t.Errorf("download into a relative DIR: exit %d, want 0 saying %q:\n%s", code, want, stderr)
	}
}

// TestDownloadUnwritableDir: an empty DIR this user may not write (a volume
// without the pod's fsGroup) is a usage error that says so, checked before
// any file is fetched, not a failed download to retry.
func TestDownloadUnwritableDir(t *testing.T) {
	_, layout := uploadedLayout(t)
	readableByAll(t, layout)
	dir := readOnlyDir(t)
	wantUsageUnprivileged(t, "download directory "+dir+" is not writable: ", "download", "--latest", "oci:"+layout, dir)
}

// TestDownloadDirIsAFile: a DIR that is a file, or lies under one, is a
// usage error that names the file, and nothing is written.
func TestDownloadDirIsAFile(t *testing.T) {
	_, layout := uploadedLayout(t)
	file := filepath.Join(t.TempDir(), "restore")
	if err := os.WriteFile(file, []byte("notes"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ dir, want string }{
		{file, "download directory " + file + " is a file: give a new or empty directory"},
		{filepath.Join(file, "a", "b"), "download directory " + filepath.Join(file, "a", "b") + " lies under " + file + ", which is a file: give a new or empty directory"},
	}
	for _, tt := range tests {
		code, _, stderr := cli(t, nil, "download", "--latest", "oci:"+layout, tt.dir)
		if code != exitcode.Usage || !strings.Contains(stderr, tt.want) {
			t.Errorf("download into %s: exit %d, want %d saying %q:\n%s", tt.dir, code, exitcode.Usage, tt.want, stderr)
		}
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != "notes" {
		t.Errorf("the file after the refusals: %q, %v", data, err)
	}
}

// TestUploadKeepsWhatItStored: upload's retention never removes the
// backup the same run stored, even one older than the policy keeps (a
// backup uploaded late, or taken on a master whose clock was behind):
// the upload would report a backup that is gone.
func TestUploadKeepsWhatItStored(t *testing.T) {
	bs := desttest.Save(t)
	srv := gcstest.New(t, "backups")
	env := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host()}
	for _, dest := range []string{"gs://backups/etcd", "oci:" + filepath.Join(t.TempDir(), "layout")} {
		t.Run(strings.Split(dest, ":")[0], func(t *testing.T) {
			newest, old := bs[2], bs[0]
			if code, _, stderr := cli(t, env, "upload", newest.Dir, dest); code != 0 {
				t.Fatalf("upload of the newest backup: exit %d\n%s", code, stderr)
			}
			for _, policy := range [][]string{{"--keep-last", "1"}, {"--keep-within", "1h"}} {
				args := append(append([]string{"upload"}, policy...), old.Dir, dest)
				code, _, stderr := cli(t, env, args...)
				if code != 0 || !strings.Contains(stderr, "stored by this upload") {
					t.Fatalf("upload %s of an older backup: exit %d, want 0 and the backup kept as stored by this upload:\n%s", policy, code, stderr)
				}
				code, stdout, stderr := cli(t, env, "list", dest)
				if code != 0 || strings.Count(stdout, "complete") != 2 {
					t.Fatalf("list after upload %s: exit %d, want both backups:\n%s%s", policy, code, stdout, stderr)
				}
			}
		})
	}
}

// TestFutureDated: a backup dated after this machine's clock (its master's
// clock was ahead) is what --latest takes for the newest until that date
// passes, so download and verify --latest warn of it, and verify --max-age
// does not take its date for freshness (exit 5): otherwise the scheduled
// verify would pass, on that one backup, for as long as the clock was ahead.
func TestFutureDated(t *testing.T) {
	now := time.Now().UTC()
	bs := desttest.SaveAt(t, now.Add(-time.Hour), now.Add(time.Minute), now.Add(48*time.Hour))
	past, near, future := bs[0], bs[1], bs[2]
	layout := filepath.Join(t.TempDir(), "layout")
	for _, b := range bs {
		if code, _, stderr := cli(t, nil, "upload", b.Dir, "oci:"+layout); code != 0 {
			t.Fatalf("upload: exit %d\n%s", code, stderr)
		}
	}
	futureURL := "oci:" + layout + ":" + oci.Tag(future.Manifest)
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"verify --latest", []string{"verify", "--latest", "--max-age", "26h", "oci:" + layout}, exitcode.Stale, []string{futureURL + " is dated", "after this machine's clock, so its age proves nothing"}},
		{"download --latest", []string{"download", "--latest", "oci:" + layout, filepath.Join(t.TempDir(), "down")}, exitcode.OK, []string{futureURL + " is dated " + future.Manifest.Timestamp + " UTC, 48h0m0s after"}},
		{"verify, dated ahead", []string{"verify", "--max-age", "26h", future.Dir}, exitcode.Stale, []string{"its age proves nothing"}},
		{"verify, dated in the past", []string{"verify", "--max-age", "26h", past.Dir}, exitcode.OK, []string{"backup verified"}},
		{"verify, dated within the skew", []string{"verify", "--max-age", "26h", near.Dir}, exitcode.OK, []string{"backup verified"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := cli(t, nil, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d:\n%s", code, tt.code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestForcedLatest: when the backup --latest takes was taken with
// --force, download and verify --latest still take it, and name the next
// newest taken with its preflight checks, which a restore can fall back
// to: not a newer one that download passed over for failing its check.
func TestForcedLatest(t *testing.T) {
	now := time.Now().UTC()
	bs := desttest.Take(t,
		desttest.Shot{At: now.Add(-3 * time.Hour)},
		desttest.Shot{At: now.Add(-2 * time.Hour), Force: true},
		desttest.Shot{At: now.Add(-time.Hour)})
	clean, forced, changed := bs[0], bs[1], bs[2]
	layout := func(bs ...desttest.Backup) string {
		dir := filepath.Join(t.TempDir(), "layout")
		for _, b := range bs {
			if code, _, stderr := cli(t, nil, "upload", b.Dir, "oci:"+dir); code != 0 {
				t.Fatalf("upload: exit %d\n%s", code, stderr)
			}
		}
		return dir
	}
	forcedNewest := layout(clean, forced)
	changedNewest := layout(clean, forced, changed)
	// The newest backup's snapshot changes where it rests: download
	// --latest passes over it, to the forced one.
	flipByte(t, filepath.Join(changedNewest, "blobs", "sha256", changed.Manifest.File(manifest.KindSnapshot).SHA256), func(size int64) int64 { return size / 2 })
	tests := []struct {
		name   string
		layout string
		args   []string
	}{
		{"download --latest", forcedNewest, []string{"download", "--latest"}},
		{"verify --latest", forcedNewest, []string{"verify", "--latest"}},
		{"download --latest, past a newer one changed", changedNewest, []string{"download", "--latest"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(tt.args, "oci:"+tt.layout)
			if tt.args[0] == "download" {
				args = append(args, filepath.Join(t.TempDir(), "down"))
			}
			want := "the backup taken at " + forced.Manifest.Timestamp + " was taken with --force: its preflight checks were skipped, and it may not restore; the next newest taken with them is oci:" + tt.layout + ":" + oci.Tag(clean.Manifest)
			code, _, stderr := cli(t, nil, args...)
			if code != 0 || !strings.Contains(stderr, want) {
				t.Errorf("exit %d, want 0 and %q:\n%s", code, want, stderr)
			}
		})
	}
}

// TestPruneGuards: besides the newest backup of a cluster, prune keeps the
// newest not dated after this machine's clock, which is the last backup
// taken when a master's clock was ahead for the newest; and the newest
// taken with its preflight checks, when the newer ones were taken with
// --force. Without them, --keep-last 1 left only the misdated, older
// backup, or only a possibly dirty one.
func TestPruneGuards(t *testing.T) {
	now := time.Now().UTC()
	tests := []struct {
		name  string
		shots []desttest.Shot
		kept  []bool
	}{
		{"clock ahead", []desttest.Shot{{At: now.Add(-3 * time.Hour)}, {At: now.Add(-2 * time.Hour)}, {At: now.Add(48 * time.Hour)}}, []bool{false, true, true}},
		{"forced", []desttest.Shot{{At: now.Add(-3 * time.Hour)}, {At: now.Add(-2 * time.Hour), Force: true}, {At: now.Add(-time.Hour), Force: true}}, []bool{true, false, true}},
	}
	srv := gcstest.New(t, "backups")
	env := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host()}
	for _, tt := range tests {
		bs := desttest.Take(t, tt.shots...)
		for _, dest := range []string{"gs://backups/" + strings.ReplaceAll(tt.name, " ", "-"), "oci:" + filepath.Join(t.TempDir(), "layout")} {
			t.Run(tt.name+"/"+strings.Split(dest, ":")[0], func(t *testing.T) {
				for _, b := range bs {
					if code, _, stderr := cli(t, env, "upload", b.Dir, dest); code != 0 {
						t.Fatalf("upload: exit %d\n%s", code, stderr)
					}
				}
				code, _, stderr := cli(t, env, "prune", "--keep-last", "1", dest)
				if code != 0 {
					t.Fatalf("prune --keep-last 1: exit %d\n%s", code, stderr)
				}
				code, stdout, _ := cli(t, env, "list", dest)
				for i, want := range tt.kept {
					if got := code == 0 && strings.Contains(stdout, bs[i].Manifest.Timestamp); got != want {
						t.Errorf("after prune --keep-last 1, backup dated %s listed: %v, want %v\n%s%s", bs[i].Manifest.Timestamp, got, want, stdout, stderr)
					}
				}
			})
		}
	}
}

// uploadedToRegistry uploads a backup to repo in a new registry over plain
// HTTP, and returns the backup, the registry and the repository's URL.
func uploadedToRegistry(t *testing.T, repo string) (desttest.Backup, *ocitest.Registry, string) {
	t.Helper()
	b := desttest.Save(t)[0]
	reg := ocitest.Start(t, ocitest.Options{})
	dest := reg.URL(repo)
	if code, _, stderr := cli(t, nil, "upload", "--tls-verify=false", b.Dir, dest); code != 0 {
		t.Fatalf("upload: exit %d\n%s", code, stderr)
	}
	return b, reg, dest
}

// TestLibraryLog: what containers/image logs, here a registry's Warning
// header, is a line in the format --log-format asks for, in the command's
// log, once however many clients list opens; it was a logrus line on the
// process's stderr, one per tag, in a JSON log too.
func TestLibraryLog(t *testing.T) {
	_, reg, dest := uploadedToRegistry(t, "backups/warned")
	p := reg.NewProxy(t)
	p.Fault = func(w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Warning", `299 - "this mirror turns read-only on Friday"`)
		return false
	}
	warned := strings.Replace(dest, reg.Host, p.Host, 1)
	tests := []struct {
		format string
		line   func(string) bool
	}{
		{"text", func(l string) bool {
			return strings.Contains(l, " WARN Warning from registry") && strings.HasSuffix(l, `"this mirror turns read-only on Friday" from=containers/image`)
		}},
		{"json", func(l string) bool {
			var rec map[string]string
			return json.Unmarshal([]byte(l), &rec) == nil && rec["level"] == "WARN" && rec["from"] == "containers/image" &&
				strings.HasSuffix(rec["msg"], `"this mirror turns read-only on Friday"`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			code, _, stderr := cli(t, nil, "list", "--log-format", tt.format, "--tls-verify=false", warned)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code != 0 || strings.Count(stderr, "Warning from registry") != 1 || !slices.ContainsFunc(lines, tt.line) {
				t.Errorf("list: exit %d; want 0 and the registry's warning once, as a %s line:\n%s", code, tt.format, stderr)
			}
		})
	}
}

// TestSignedURLNotLogged: a registry that keeps blobs in object storage
// sends each download to a presigned URL, whose query lets anyone read the
// blob until it expires. When that download fails, net/http quotes the URL
// in its error; the command's log, in either format, leaves its query out.
func TestSignedURLNotLogged(t *testing.T) {
	b, reg, dest := uploadedToRegistry(t, "backups/signed")
	// Object storage that is gone: nothing listens where the URL points.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.Addr().String()
	ln.Close()
	snapshot := b.Manifest.File(manifest.KindSnapshot).SHA256
	p := reg.NewProxy(t)
	p.Fault = ocitest.RedirectBlob(snapshot, "http://"+gone+"/blob?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=SECRETSIG")
	backup := strings.Replace(dest, reg.Host, p.Host, 1) + ":" + oci.Tag(b.Manifest)
	for _, format := range []string{"text", "json"} {
		code, _, stderr := cli(t, nil, "download", "--log-format", format, "--tls-verify=false", backup, filepath.Join(t.TempDir(), "down"))
		if code == 0 || !strings.Contains(stderr, gone+"/blob?…") {
			t.Errorf("%s: download through a dead presigned URL: exit %d, want a failure naming the URL without its query:\n%s", format, code, stderr)
		}
		if strings.Contains(stderr, "SECRETSIG") || strings.Contains(stderr, "AKIAEXAMPLE") {
			t.Errorf("%s: the presigned URL's query is logged:\n%s", format, stderr)
		}
	}
}
