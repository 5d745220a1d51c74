//go:build imagetest

package imagetest

import (
	"bytes"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
	"github.com/etcd-backup/etcd-backup/internal/snapshot"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

const (
	image    = "localhost/etcd-backup:imagetest"
	version  = "v0.0.0-imagetest"
	commit   = "0123456789abcdef0123456789abcdef01234567"
	binary   = "/usr/local/bin/etcd-backup"
	caBundle = "/etc/ssl/certs/ca-certificates.crt"
	user     = "65532:65532"
	bucket   = "backups"
)

// machines maps each architecture of the manifest list to its ELF machine.
var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func TestMain(m *testing.M) {
	snapshot.ServeChild()
	os.Exit(m.Run())
}

// buildah runs buildah on storage of its own, so that the test neither sees
// nor leaves images in the machine's storage.
type buildah struct {
	t     *testing.T
	flags []string
}

func newBuildah(t *testing.T) *buildah {
	bin, err := exec.LookPath("buildah")
	if err != nil {
		t.Fatalf("the image test needs buildah (apt-get install buildah): %v", err)
	}
	store := t.TempDir()
	b := &buildah{t: t, flags: []string{bin, "--storage-driver", "vfs", "--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run")}}
	// vfs leaves read-only layer copies behind that t.TempDir cannot remove.
	t.Cleanup(func() { exec.Command(b.flags[0], append(b.flags[1:], "rm", "--all")...).Run() })
	t.Cleanup(func() { exec.Command(b.flags[0], append(b.flags[1:], "rmi", "--all", "--force")...).Run() })
	return b
}

// run runs buildah and returns its stdout; it fails the test on an error.
func (b *buildah) run(args ...string) string {
	b.t.Helper()
	out, err := b.try(args...)
	if err != nil {
		b.t.Fatalf("buildah %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (b *buildah) try(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(b.flags[0], append(slices.Clone(b.flags[1:]), args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// container creates a working container of the image for arch.
func (b *buildah) container(arch string) string {
	b.t.Helper()
	c := strings.TrimSpace(b.run("from", "--platform", "linux/"+arch, "--pull=never", image))
	b.t.Cleanup(func() { b.try("rm", c) })
	return c
}

// exec runs the binary in container c as the pod would; extra are buildah
// run flags (mounts, environment, user).
func (b *buildah) exec(c string, extra []string, args ...string) (string, error) {
	a := append([]string{"run", "--isolation", "chroot"}, extra...)
	a = append(a, c, "--", binary)
	return b.try(append(a, args...)...)
}

func TestImage(t *testing.T) {
	b := newBuildah(t)
	ca := tlsEmulator(t)
	build(t, b, ca.bundle)

	t.Run("manifest list", func(t *testing.T) {
		var list struct {
			Manifests []struct {
				Platform struct{ OS, Architecture string }
			}
		}
		if err := json.Unmarshal([]byte(b.run("manifest", "inspect", image)), &list); err != nil {
			t.Fatal(err)
		}
		var arches []string
		for _, m := range list.Manifests {
			if m.Platform.OS == "linux" {
				arches = append(arches, m.Platform.Architecture)
			}
		}
		if slices.Sort(arches); !slices.Equal(arches, []string{"amd64", "arm64"}) {
			t.Errorf("manifest list holds linux %v, want amd64 and arm64", arches)
		}
	})
	for arch, machine := range machines {
		t.Run("contents "+arch, func(t *testing.T) { checkContents(t, b, arch, machine, ca.bundle) })
	}

	if _, ok := machines[runtime.GOARCH]; !ok {
		t.Fatalf("the image is only run on amd64 or arm64, not %s", runtime.GOARCH)
	}
	c := b.container(runtime.GOARCH)
	t.Run("version", func(t *testing.T) {
		out, err := b.exec(c, nil, "version")
		if err != nil || !strings.Contains(out, version) || !strings.Contains(out, commit) {
			t.Errorf("version: %v, want %s and %s:\n%s", err, version, commit, out)
		}
	})
	t.Run("runs as 65532", func(t *testing.T) {
		// The only thing this user can write is a metrics file into a
		// world-writable directory: its owner is the process's user.
		out := worldWritable(t)
		b.exec(c, []string{"-v", out + ":/out"}, "verify", "--metrics-file", "/out/verify.prom", "/out/no-backup")
		checkOwner(t, filepath.Join(out, "verify.prom"), 65532)
	})

	cl := testcluster.New(t, testcluster.Options{})
	backups := worldWritable(t)
	root := []string{"--user", "0:0"}
	t.Run("save as root", func(t *testing.T) {
		mounts := append(root, "-v", cl.HostRoot+":/host:ro", "-v", backups+":/backup")
		if out, err := b.exec(c, mounts, "save", "--host-root", "/host", "--node-name", cl.NodeName, "/backup/b"); err != nil {
			t.Fatalf("save in the image: %v\n%s", err, out)
		}
		if _, err := verify.Dir(t.Context(), filepath.Join(backups, "b"), verify.Options{Log: slog.New(slog.DiscardHandler)}); err != nil {
			t.Errorf("the backup saved in the image: %v", err)
		}
	})
	t.Run("upload over TLS with the image's CA bundle", func(t *testing.T) {
		flags := append(root, "-v", backups+":/backup:ro", "--env", "STORAGE_EMULATOR_HOST="+ca.url)
		// The control: with Go pointed at another CA file, TLS fails.
		other := append(slices.Clone(flags), "--env", "SSL_CERT_FILE=/usr/local/bin/etcd-backup", "--env", "SSL_CERT_DIR=/tmp")
		if out, err := b.exec(c, other, "upload", "--stall-timeout", "5s", "/backup/b", "gs://"+bucket+"/etcd"); err == nil || !strings.Contains(out, "certificate") {
			t.Fatalf("upload without the CA bundle: %v, want a certificate error\n%s", err, out)
		}
		if out, err := b.exec(c, flags, "upload", "/backup/b", "gs://"+bucket+"/etcd"); err != nil {
			t.Fatalf("upload in the image: %v\n%s", err, out)
		}
		objs, err := ca.emulator.Objects(bucket)
		if err != nil || len(objs) != 3 {
			t.Errorf("the bucket holds %d objects (%v), want the 3 files of the backup", len(objs), err)
		}
	})
	t.Run("upload trusting the Task's ca-bundle", func(t *testing.T) {
		// A registry whose CA is in no bundle of the image, as behind a
		// proxy that inspects TLS: the Task mounts its ca-bundle workspace
		// in the last directory its SSL_CERT_DIR names (the first is
		// OpenShift Pipelines', missing here), and Go trusts it besides the
		// image's bundle.
		reg := ocitest.Start(t, ocitest.Options{TLS: true})
		certDirs := taskEnv(t, "upload", "SSL_CERT_DIR")
		caDir := certDirs[strings.LastIndex(certDirs, ":")+1:]
		bundle := t.TempDir()
		ca, err := os.ReadFile(filepath.Join(reg.CertDir, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bundle, "ca-bundle.crt"), ca, 0o600); err != nil {
			t.Fatal(err)
		}
		flags := append(root, "-v", backups+":/backup:ro", "-v", bundle+":"+caDir+":ro", "-v", reg.AuthFile+":/auth.json:ro")
		upload := []string{"upload", "--authfile", "/auth.json", "--stall-timeout", "5s", "/backup/b", "docker://" + reg.Host + "/backups"}
		if out, err := b.exec(c, flags, upload...); err == nil || !strings.Contains(out, "certificate") {
			t.Fatalf("upload with the CA mounted but not named: %v, want a certificate error\n%s", err, out)
		}
		trusting := append(slices.Clone(flags), "--env", "SSL_CERT_DIR="+certDirs)
		if out, err := b.exec(c, trusting, upload...); err != nil {
			t.Fatalf("upload in the image with SSL_CERT_DIR=%s: %v\n%s", certDirs, err, out)
		}
	})
}

// taskEnv returns the value the etcd-backup Task's step sets name to.
func taskEnv(t *testing.T, step, name string) string {
	t.Helper()
	data, err := os.ReadFile("../../task/etcd-backup/0.1/etcd-backup.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var task struct {
		Spec struct {
			Steps []struct {
				Name string
				Env  []struct{ Name, Value string }
			}
		}
	}
	if err := yaml.Unmarshal(data, &task); err != nil {
		t.Fatal(err)
	}
	for _, s := range task.Spec.Steps {
		for _, e := range s.Env {
			if s.Name == step && e.Name == name {
				return e.Value
			}
		}
	}
	t.Fatalf("the Task's %s step sets no %s", step, name)
	return ""
}

// build runs `make image` with the test's storage and CA bundle.
func build(t *testing.T, b *buildah, bundle []byte) {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-C", "../..", "image",
		"BIN="+t.TempDir(), "IMAGE="+image, "VERSION="+version, "COMMIT="+commit,
		"CA_BUNDLE="+caFile, "BUILDAH="+strings.Join(b.flags, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
}

// checkContents mounts the image for arch and checks what the
// Containerfile promises: the binary for arch, the CA bundle, /tmp, the
// user and the labels.
func checkContents(t *testing.T, b *buildah, arch string, machine elf.Machine, bundle []byte) {
	c := b.container(arch)
	var cfg struct {
		OCIv1 struct {
			Architecture string
			Config       struct {
				User   string
				Labels map[string]string
			}
		}
	}
	if err := json.Unmarshal([]byte(b.run("inspect", c)), &cfg); err != nil {
		t.Fatal(err)
	}
	if got := cfg.OCIv1.Config.User; got != user {
		t.Errorf("user %q, want %q", got, user)
	}
	if l := cfg.OCIv1.Config.Labels; l["org.opencontainers.image.version"] != version || l["org.opencontainers.image.revision"] != commit {
		t.Errorf("labels %v, want version %s and revision %s", l, version, commit)
	}
	mnt := strings.TrimSpace(b.run("mount", c))
	t.Cleanup(func() { b.try("umount", c) })
	f, err := elf.Open(filepath.Join(mnt, binary))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s is for %s, want %s", binary, f.Machine, machine)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, caBundle)); err != nil || !bytes.Equal(got, bundle) {
		t.Errorf("%s is not the bundle the image was built with (%v)", caBundle, err)
	}
	if fi, err := os.Stat(filepath.Join(mnt, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("/tmp: %v, want a world-writable sticky directory (%v)", fi.Mode(), err)
	}
}

// emulator is a Cloud Storage emulator behind TLS from a CA the machine
// does not trust, and a CA bundle that holds it.
type emulator struct {
	emulator *gcstest.Server
	url      string
	bundle   []byte
}

// tlsEmulator fronts the emulator with TLS. The image is built with the
// machine's CA bundle and this server's certificate, so an upload in the
// image succeeds only through the image's own bundle.
func tlsEmulator(t *testing.T) *emulator {
	gcs := gcstest.New(t, bucket)
	target, err := url.Parse(gcs.URL())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	// The control's refused handshake is expected, not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	bundle, err := os.ReadFile(caBundle)
	if err != nil {
		t.Fatalf("the image takes the machine's CA bundle: %v", err)
	}
	if _, err := x509.ParseCertificate(srv.Certificate().Raw); err != nil {
		t.Fatal(err)
	}
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})...)
	return &emulator{emulator: gcs, url: srv.URL, bundle: bundle}
}

// worldWritable is a directory the image's unprivileged user may write.
func worldWritable(t *testing.T) string {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func checkOwner(t *testing.T, path string, uid uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("the process in the image wrote nothing: %v", err)
	}
	if got := fi.Sys().(*syscall.Stat_t).Uid; got != uid {
		t.Errorf("%s is owned by uid %d, want %d", path, got, uid)
	}
}
