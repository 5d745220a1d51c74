package archive

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// entry is one file, directory or symlink of a fixture tree.
type entry struct {
	name     string      // relative to the tree's root (/etc/kubernetes)
	mode     fs.FileMode // permissions and setuid/setgid/sticky bits
	data     string      // file content
	link     string      // symlink target
	dir      bool
	uid, gid int // owner when the test runs as root; 0 leaves it
}

// fixture is a host /etc/kubernetes with four running revisions, plus what
// must not end up in their archive.
type fixture struct {
	root     string // <host>/etc/kubernetes
	dirs     []string
	entries  []entry // the entries below dirs
	earliest manifest.CertExpiry
}

const (
	outsideSecret = "OUTSIDE-SECRET-CONTENT"
	hiddenContent = "HIDDEN-DIR-CONTENT"
	notRunning    = "NOT-RUNNING-REVISION"
)

// certPEM returns a self-signed certificate expiring at notAfter.
func certPEM(t testing.TB, cn string, notAfter time.Time) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notAfter.Add(-365 * 24 * time.Hour),
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 12, 30, 15, 0, time.UTC) }

func newFixture(t testing.TB) *fixture {
	t.Helper()
	host := t.TempDir()
	outside := filepath.Join(host, "outside")
	const (
		api = "static-pod-resources/kube-apiserver-pod-7"
		kcm = "static-pod-resources/kube-controller-manager-pod-9"
		sch = "static-pod-resources/kube-scheduler-pod-6"
		etc = "static-pod-resources/etcd-pod-5"
	)
	f := &fixture{
		root:     filepath.Join(host, "etc", "kubernetes"),
		dirs:     []string{api, kcm, sch, etc},
		earliest: manifest.CertExpiry{Path: api + "/secrets/serving-cert/tls.crt", NotAfter: date(2028, 3, 4)},
	}
	f.entries = []entry{
		{name: api, dir: true, mode: 0o755},
		{name: api + "/configmaps", dir: true, mode: 0o755},
		{name: api + "/configmaps/config", dir: true, mode: 0o755},
		{name: api + "/configmaps/config/config.yaml", mode: 0o644, data: "apiVersion: kubecontrolplane.config.openshift.io/v1\n"},
		{name: api + "/configmaps/trusted-ca", dir: true, mode: 0o755},
		{name: api + "/configmaps/trusted-ca/ca-bundle.crt", mode: 0o644,
			data: certPEM(t, "ca-a", date(2031, 1, 1)) + "# comment between blocks\n" + certPEM(t, "ca-b", date(2029, 6, 1))},
		{name: api + "/secrets", dir: true, mode: 0o700},
		{name: api + "/secrets/encryption-config", dir: true, mode: 0o700},
		{name: api + "/secrets/encryption-config/encryption-config", mode: 0o600,
			data: "kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\n"},
		{name: api + "/secrets/serving-cert", dir: true, mode: 0o700},
		{name: api + "/secrets/serving-cert/tls.crt", mode: 0o600, data: certPEM(t, "serving", f.earliest.NotAfter)},
		{name: api + "/secrets/serving-cert/tls.key", mode: 0o600, data: "-----BEGIN EC PRIVATE KEY-----\nnot a key\n-----END EC PRIVATE KEY-----\n"},
		// Past the size bound: its certificate is not inspected.
		{name: api + "/secrets/serving-cert/z-big.pem", mode: 0o600,
			data: certPEM(t, "big", date(2027, 1, 1)) + strings.Repeat("#", maxCertFileSize)},
		{name: api + "/bin", dir: true, mode: 0o750 | fs.ModeSetgid},
		{name: api + "/bin/run.sh", mode: 0o755 | fs.ModeSetuid, data: "#!/bin/sh\nexit 0\n"},
		{name: api + "/empty", dir: true, mode: 0o700},
		{name: api + "/current", link: "configmaps/config"},
		{name: api + "/dangling", link: "no/such/file"},
		{name: api + "/leak", link: filepath.Join(outside, "secret.txt")},
		{name: api + "/leakdir", link: filepath.Join(outside, "dir")},
		{name: kcm, dir: true, mode: 0o755, gid: 5678},
		{name: kcm + "/configmaps", dir: true, mode: 0o755},
		{name: kcm + "/configmaps/config.yaml", mode: 0o640, data: "kind: KubeControllerManagerConfig\n", uid: 1234, gid: 5678},
		{name: kcm + "/link", link: "configmaps/config.yaml", uid: 4321, gid: 4321},
		{name: sch, dir: true, mode: 0o755},
		{name: sch + "/kube-scheduler-pod.yaml", mode: 0o644, data: "{}"},
		{name: etc, dir: true, mode: 0o755},
		{name: etc + "/etcd-pod.yaml", mode: 0o644, data: "{}"},
		{name: etc + "/secrets", dir: true, mode: 0o700},
		{name: etc + "/secrets/etcd-all-certs", dir: true, mode: 0o700},
		{name: etc + "/secrets/etcd-all-certs/etcd-peer-m0.crt", mode: 0o600, data: certPEM(t, "peer", date(2030, 2, 2))},
		{name: etc + "/secrets/etcd-all-certs/empty-file.crt", mode: 0o600},
	}
	others := []entry{
		{name: "static-pod-resources/kube-apiserver-pod-8", dir: true, mode: 0o755},
		{name: "static-pod-resources/kube-apiserver-pod-8/marker", mode: 0o644, data: notRunning},
		{name: "static-pod-resources/kube-apiserver-certs", dir: true, mode: 0o755},
		{name: "static-pod-resources/kube-apiserver-certs/old.crt", mode: 0o644, data: certPEM(t, "old", date(2025, 1, 1))},
	}
	for _, e := range append(f.entries, others...) {
		create(t, filepath.Join(f.root, filepath.FromSlash(e.name)), e)
	}
	create(t, filepath.Join(outside, "secret.txt"), entry{mode: 0o644, data: outsideSecret})
	create(t, filepath.Join(outside, "dir", "hidden"), entry{mode: 0o644, data: hiddenContent})
	// Fixed times, set last because creating children changes a directory's.
	for i, e := range f.entries {
		if e.link == "" {
			mt := time.Date(2024, 5, 6, 7, 8, 9, 500_000_000, time.UTC).Add(time.Duration(i) * time.Minute)
			if err := os.Chtimes(filepath.Join(f.root, filepath.FromSlash(e.name)), mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f
}

func create(t testing.TB, p string, e entry) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	switch {
	case e.link != "":
		err = os.Symlink(e.link, p)
	case e.dir:
		if err = os.Mkdir(p, 0o700); err == nil {
			err = os.Chmod(p, e.mode)
		}
	default:
		if err = os.WriteFile(p, []byte(e.data), 0o600); err == nil {
			err = os.Chmod(p, e.mode)
		}
	}
	if err == nil && (e.uid != 0 || e.gid != 0) && os.Geteuid() == 0 {
		err = os.Lchown(p, e.uid, e.gid)
		if err == nil && e.link == "" {
			err = os.Chmod(p, e.mode) // chown clears setuid and setgid
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// kubeadm reports whether f is a kubeadm node's tree.
func (f *fixture) kubeadm() bool { return f.dirs[0] == "manifests" }

// summary is what Write and Check must report for the fixture's entries.
func (f *fixture) summary() Summary {
	s := Summary{EncryptionConfig: !f.kubeadm(), EarliestCert: &f.earliest}
	for _, e := range f.entries {
		switch {
		case e.dir:
			s.Dirs++
		case e.link != "":
			s.Symlinks++
		default:
			s.Files++
			s.Bytes += int64(len(e.data))
		}
	}
	return s
}

// newKubeadmFixture is a kubeadm node's /etc/kubernetes: manifests and pki
// to archive, kubeconfigs and a stray directory beside them that must not be.
func newKubeadmFixture(t testing.TB) *fixture {
	t.Helper()
	host := t.TempDir()
	f := &fixture{
		root:     filepath.Join(host, "etc", "kubernetes"),
		dirs:     []string{"manifests", "pki"},
		earliest: manifest.CertExpiry{Path: "pki/etcd/healthcheck-client.crt", NotAfter: date(2026, 9, 1)},
	}
	f.entries = []entry{
		{name: "manifests", dir: true, mode: 0o755},
		{name: "manifests/etcd.yaml", mode: 0o600, data: "apiVersion: v1\nkind: Pod\n"},
		{name: "manifests/kube-apiserver.yaml", mode: 0o600, data: "apiVersion: v1\nkind: Pod\n"},
		{name: "pki", dir: true, mode: 0o755},
		{name: "pki/ca.crt", mode: 0o644, data: certPEM(t, "kubernetes", date(2035, 1, 1))},
		{name: "pki/ca.key", mode: 0o600, data: "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n"},
		{name: "pki/sa.pub", mode: 0o600, data: "-----BEGIN PUBLIC KEY-----\n"},
		{name: "pki/etcd", dir: true, mode: 0o755},
		{name: "pki/etcd/ca.crt", mode: 0o644, data: certPEM(t, "etcd-ca", date(2035, 1, 1))},
		{name: "pki/etcd/healthcheck-client.crt", mode: 0o644, data: certPEM(t, "kube-etcd-healthcheck-client", f.earliest.NotAfter)},
		{name: "pki/etcd/healthcheck-client.key", mode: 0o600, data: "key"},
		{name: "pki/current.pem", link: "ca.crt"},
		{name: "pki/leak", link: filepath.Join(host, "outside", "secret.txt")},
	}
	others := []entry{
		{name: "admin.conf", mode: 0o600, data: outsideSecret},
		{name: "manifests.bak", dir: true, mode: 0o700},
		{name: "manifests.bak/etcd.yaml", mode: 0o600, data: notRunning},
	}
	for _, e := range append(f.entries, others...) {
		create(t, filepath.Join(f.root, filepath.FromSlash(e.name)), e)
	}
	create(t, filepath.Join(host, "outside", "secret.txt"), entry{mode: 0o644, data: hiddenContent})
	return f
}
