// Package ocitest starts the CNCF distribution registry in-process for
// tests: over plain HTTP, or over TLS with htpasswd basic auth, and with
// deletes enabled or not; a fault proxy can stand in front of it.
package ocitest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // the htpasswd access controller
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the filesystem storage driver
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"
)

// Options shape a registry.
type Options struct {
	// TLS serves HTTPS with a certificate from a generated CA, and asks
	// for a user and password (htpasswd, bcrypt).
	TLS bool
	// Deletes enables manifest deletes (distribution's default is off).
	Deletes bool
	// ReadOnly puts the registry in read-only maintenance.
	ReadOnly bool
}

// Registry is a running registry.
type Registry struct {
	// Host is 127.0.0.1:PORT.
	Host string
	// CertDir holds ca.crt for --cert-dir (TLS only).
	CertDir string
	// AuthFile is a containers-auth.json with the password (TLS only).
	AuthFile string
	// Password is the one the registry asks for (TLS only), for tests that
	// check it never reaches a log.
	Password string
	// Handler is the registry itself, for a proxy to front.
	Handler http.Handler
	srv     *httptest.Server
	root    string
}

// BlobPath is where the registry keeps the content of blob d.
func (r *Registry) BlobPath(d digest.Digest) string {
	return filepath.Join(r.root, "docker/registry/v2/blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

const user = "backup"

// Start starts a registry that stops when the test ends.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	dir := t.TempDir()
	r := &Registry{root: filepath.Join(dir, "storage")}
	var auth configuration.Auth
	if opts.TLS {
		r.Password = rand.Text()
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		writeFile(t, htpasswd, fmt.Appendf(nil, "%s:%s\n", user, hash))
		auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "test", "path": htpasswd}}
	}
	r.srv = r.server(opts, auth)
	if opts.TLS {
		r.CertDir = filepath.Join(dir, "certs")
		r.srv.TLS = serverTLS(t, r.CertDir)
		r.srv.StartTLS()
	} else {
		r.srv.Start()
	}
	t.Cleanup(r.srv.Close)
	r.Host = r.srv.Listener.Addr().String()
	if opts.TLS {
		r.AuthFile = WriteAuthFile(t, r.Host, user, r.Password)
	}
	return r
}

// Serve starts a registry over plain HTTP that keeps its blobs below dir,
// outside tests (make demo); Close stops it.
func Serve(dir string) *Registry {
	r := &Registry{root: filepath.Join(dir, "storage")}
	r.srv = r.server(Options{Deletes: true}, nil)
	r.srv.Start()
	r.Host = r.srv.Listener.Addr().String()
	return r
}

// Close stops a registry that Serve started.
func (r *Registry) Close() { r.srv.Close() }

// server is an unstarted server of the registry, storing below r.root.
func (r *Registry) server(opts Options, auth configuration.Auth) *httptest.Server {
	cfg := &configuration.Configuration{
		Auth: auth,
		Storage: configuration.Storage{
			// On disk, so that a test can change a stored blob.
			"filesystem": configuration.Parameters{"rootdirectory": r.root},
			"delete":     configuration.Parameters{"enabled": opts.Deletes},
			"maintenance": configuration.Parameters{
				// No purger goroutine outliving the test.
				"uploadpurging": map[any]any{"enabled": false},
				"readonly":      map[any]any{"enabled": opts.ReadOnly},
			},
		},
	}
	// The registry logs every request, and the 404s of tag checks as
	// errors, through logrus's global logger; callers look at results.
	logrus.SetOutput(io.Discard)
	r.Handler = handlers.NewApp(context.Background(), cfg)
	srv := httptest.NewUnstartedServer(r.Handler)
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	return srv
}

// WriteAuthFile writes a containers-auth.json for host.
func WriteAuthFile(t testing.TB, host, user, password string) string {
	t.Helper()
	auth := map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
	}}}
	data, err := json.Marshal(auth)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "auth.json")
	writeFile(t, path, data)
	return path
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serverTLS generates a CA, writes it to certDir/ca.crt, and returns a
// server config with a certificate it issued for 127.0.0.1.
func serverTLS(t testing.TB, certDir string) *tls.Config {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ocitest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(certDir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// URL is docker://HOST/repo.
func (r *Registry) URL(repo string) string { return "docker://" + r.Host + "/" + repo }

// Delete sends DELETE /v2/path to a registry served over plain HTTP, as an
// operator's tools do around this one, and wants it accepted.
func (r *Registry) Delete(t testing.TB, path string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, "http://"+r.Host+"/v2/"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE /v2/%s: %s", path, res.Status)
	}
}

// Proxy is a registry's front door that can break requests.
type Proxy struct {
	Host string
	// Fault, when set, may answer a request itself (returning true).
	Fault func(w http.ResponseWriter, req *http.Request) bool
}

// RedirectBlob is a Fault that sends each read of the blob whose SHA-256
// is hex to location, as a registry that keeps its blobs in object storage
// does.
func RedirectBlob(hex, location string) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/sha256:"+hex) {
			return false
		}
		http.Redirect(w, r, location, http.StatusTemporaryRedirect)
		return true
	}
}

// NewProxy serves r's handler behind p.Fault over plain HTTP.
func (r *Registry) NewProxy(t testing.TB) *Proxy {
	p := &Proxy{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if p.Fault != nil && p.Fault(w, req) {
			return
		}
		r.Handler.ServeHTTP(w, req)
	}))
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	srv.Start()
	t.Cleanup(srv.Close)
	p.Host = srv.Listener.Addr().String()
	return p
}
