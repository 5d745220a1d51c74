package member

import (
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// TestDialCredentials: Dial sorts credentials that cannot work from a member
// that does not answer, so that the caller can tell a configuration error
// from one that a retry may cure.
func TestDialCredentials(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	dir := t.TempDir()
	now := time.Now()
	expired, err := c.IssueClientCert(dir, testcluster.ClientCert{Name: "expired", NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := c.IssueClientCert(dir, testcluster.ClientCert{Name: "foreign", ForeignCA: "other-signer"})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(c.CACert)
	if err != nil {
		t.Fatal(err)
	}
	foreignCA, err := os.ReadFile(foreign.CA)
	if err != nil {
		t.Fatal(err)
	}
	both := filepath.Join(dir, "both.crt")
	if err := os.WriteFile(both, slices.Concat(ca, foreignCA), 0o600); err != nil {
		t.Fatal(err)
	}
	// A Secret mounted whole, as the kubelet lays it out: each key a link
	// into ..data.
	secret := filepath.Join(dir, "etcd-client")
	data := filepath.Join(secret, "..2026_12_05_05_40_00.1")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(secret, "..data")); err != nil {
		t.Fatal(err)
	}
	for key, from := range map[string]string{"ca.crt": c.CACert, "tls.crt": c.Cert, "tls.key": c.Key} {
		pem, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, key), pem, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", key), filepath.Join(secret, key)); err != nil {
			t.Fatal(err)
		}
	}
	good := Config{Endpoint: c.Endpoint, CACert: c.CACert, Cert: c.Cert, Key: c.Key, RequestTimeout: 5 * time.Second}
	with := func(f func(*Config)) Config { cfg := good; f(&cfg); return cfg }

	tests := []struct {
		name        string
		cfg         Config
		credentials bool   // Dial fails with ErrCredentials
		says        string // and says this
		statusErr   string // else what Status says, "" for success
	}{
		{name: "good", cfg: good},
		{name: "expired", cfg: with(func(c *Config) { c.Cert, c.Key = expired.Cert, expired.Key }), credentials: true},
		{name: "refused by the member", cfg: with(func(c *Config) { c.CACert, c.Cert, c.Key = both, foreign.Cert, foreign.Key }), credentials: true},
		{name: "missing CA bundle", cfg: with(func(c *Config) { c.CACert = filepath.Join(dir, "none.crt") }), credentials: true},
		{name: "CA bundle a Secret", cfg: with(func(c *Config) { c.CACert = secret }), credentials: true,
			says: "CA bundle " + secret + " is a directory: give the file in it, " + filepath.Join(secret, "ca.crt") + " (--cacert)"},
		{name: "client certificate a Secret", cfg: with(func(c *Config) { c.Cert = secret }), credentials: true,
			says: "client certificate " + secret + " is a directory: give the file in it, " + filepath.Join(secret, "tls.crt") + " (--cert)"},
		{name: "client key a Secret", cfg: with(func(c *Config) { c.Key = secret }), credentials: true,
			says: "client key " + secret + " is a directory: give the file in it, " + filepath.Join(secret, "tls.key") + " (--key)"},
		{name: "CA bundle endless", cfg: with(func(c *Config) { c.CACert = "/dev/zero" }), credentials: true,
			says: "CA bundle /dev/zero is larger than 4 MiB, as no PEM file is: give the CA bundle (--cacert)"},
		{name: "a Secret's files", cfg: with(func(c *Config) {
			c.CACert, c.Cert, c.Key = filepath.Join(secret, "ca.crt"), filepath.Join(secret, "tls.crt"), filepath.Join(secret, "tls.key")
		})},
		{name: "nobody listening", cfg: with(func(cfg *Config) { cfg.Endpoint = "https://" + c.IP + ":1"; cfg.RequestTimeout = time.Second }), statusErr: "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Dial(t.Context(), tt.cfg)
			if tt.credentials {
				if !errors.Is(err, ErrCredentials) || err.Error() != cmp.Or(tt.says, err.Error()) {
					t.Fatalf("Dial = %v, want ErrCredentials saying %q", err, tt.says)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer m.Close()
			_, err = m.Status(t.Context())
			switch {
			case tt.statusErr == "" && err != nil:
				t.Fatalf("Status: %v", err)
			case tt.statusErr != "" && (err == nil || !strings.Contains(err.Error(), tt.statusErr) || errors.Is(err, ErrCredentials)):
				t.Fatalf("Status = %v, want an error with %q that is not ErrCredentials", err, tt.statusErr)
			}
		})
	}
}
