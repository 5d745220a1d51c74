package oci

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/distribution/registry/api/errcode"
	"go.podman.io/image/v5/docker"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// TestSettingsError: each error that the settings cause, wrapped as
// containers/image returns it, becomes a usage error naming what to give;
// any other error is left as it is, to be retried. The cases the tests
// against a real registry cannot provoke are here: an expired certificate,
// a denied repository, an ordinary failure.
func TestSettingsError(t *testing.T) {
	ping := func(err error) error {
		return fmt.Errorf("pinging container registry r: %w", &url.Error{Op: "Get", URL: "https://r/v2/", Err: err})
	}
	cases := []struct {
		name string
		err  error
		want string // in the hint; "" for none
	}{
		{"plain HTTP", ping(http.ErrSchemeMismatch), "--tls-verify=false"},
		{"unknown CA", ping(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), "--cert-dir"},
		{"another name", ping(&tls.CertificateVerificationError{Err: x509.HostnameError{Host: "r", Certificate: &x509.Certificate{Subject: pkix.Name{CommonName: "s"}, DNSNames: []string{"s"}}}}), "as its certificate does"},
		{"name only as Common Name", ping(&tls.CertificateVerificationError{Err: x509.HostnameError{Host: "r", Certificate: &x509.Certificate{Subject: pkix.Name{CommonName: "r"}}}}), "reissue it with the host in subjectAltName"},
		{"expired", ping(&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}), "expired"},
		{"no credentials", fmt.Errorf("fetching tags list: %w", errcode.Error{Code: errcode.ErrorCodeUnauthorized}), "--authfile"},
		{"wrong password", docker.ErrUnauthorizedForCredentials{Err: errors.New("401")}, "--authfile"},
		{"denied", fmt.Errorf("writing manifest: %w", errcode.Error{Code: errcode.ErrorCodeDenied}), "may push to and pull from the repository"},
		{"unavailable", fmt.Errorf("fetching blob: %w", errcode.Error{Code: errcode.ErrorCodeUnavailable}), ""},
		{"bad gateway", fmt.Errorf("fetching blob: %w", docker.UnexpectedHTTPStatusError{StatusCode: http.StatusBadGateway}), ""},
		{"reset", ping(io.ErrUnexpectedEOF), ""},
		{"no such host", ping(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "mirror.exampel.com", IsNotFound: true}}), "no DNS name mirror.exampel.com exists"},
		{"DNS down", ping(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "server misbehaving", Name: "mirror.example.com", IsTemporary: true}}), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := settingsError(c.err, endpoint{host: "r"})
			if c.want == "" {
				if got != c.err || settingsHint(c.err, endpoint{host: "r"}) != "" {
					t.Errorf("settingsError(%v) = %v, want it unchanged", c.err, got)
				}
				return
			}
			if !strings.Contains(got.Error(), c.want) || exitcode.Of(got) != exitcode.Usage || !errors.Is(got, c.err) {
				t.Errorf("settingsError(%v) = %v (exit %d), want exit %d, %q, wrapping the error", c.err, got, exitcode.Of(got), exitcode.Usage, c.want)
			}
			// A retry loop applies it again to what it returns.
			if again := settingsError(got, endpoint{host: "r"}); again != got {
				t.Errorf("settingsError applied twice = %v, want the hint once", again)
			}
		})
	}
}

// TestDetour: an error of a request that went not to the registry but to a
// host it sends clients to (its token service, or the storage a blob
// download is redirected to) names that host and what it is for; settings
// that cannot work there are a usage error (exit 2) saying what to do
// about that host, anything else is left to be retried and says which host
// fails. Before, an unresolvable token service was "is the registry's host
// name mistyped?", and a silent one only its URL.
func TestDetour(t *testing.T) {
	const registry = "mirror.example.com:5000"
	at := func(op, u string, err error) error {
		return fmt.Errorf("fetching manifest t in %s/t/a: %w", registry, &url.Error{Op: op, URL: u, Err: err})
	}
	const token = "https://auth.example.com/token?scope=repository%3At%2Fa%3Apull&service=mirror"
	const storage = "https://bucket.s3.example.com/blobs/x?X-Amz-Signature=s"
	dns := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "auth.example.com", IsNotFound: true}}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	cases := []struct {
		name string
		err  error
		exit int
		want string // "" for the error unchanged
	}{
		{"token service unresolvable", at("Get", token, dns), exitcode.Usage, "no DNS name auth.example.com exists here, and the registry sends this client there for a token (its token service): have the registry's administrators name that service"},
		{"token service's CA", at("Get", token, &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), exitcode.Usage, "the certificate of auth.example.com, where the registry sends this client for a token (its token service): give --cert-dir DIR with that CA in DIR too"},
		{"OAuth2 token service refuses", at("Post", "https://auth.example.com/token", refused), exitcode.Failure, "auth.example.com, where the registry sends this client for a token (its token service), is the host that fails: let this pod reach it as well as the registry"},
		{"storage's certificate for another host", at("Get", storage, &tls.CertificateVerificationError{Err: x509.HostnameError{Host: "bucket.s3.example.com", Certificate: &x509.Certificate{DNSNames: []string{"s3.example.com"}}}}), exitcode.Usage, "the certificate of bucket.s3.example.com, where the registry sends this client for a blob's bytes (the storage it serves them from), is not for that host"},
		{"storage expired", at("Get", storage, &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}), exitcode.Usage, "is expired or not yet valid, or this machine's clock is wrong"},
		{"storage silent", at("Get", storage, errors.New("no answer within the stall timeout (1m0s)")), exitcode.Failure, "bucket.s3.example.com, where the registry sends this client for a blob's bytes (the storage it serves them from), is the host that fails"},
		{"credentials refused by the token service", at("Get", token, docker.ErrUnauthorizedForCredentials{Err: errors.New("401")}), exitcode.Usage, "--authfile"},
		{"the registry itself", at("Get", "https://"+registry+"/v2/t/a/manifests/t", refused), exitcode.Failure, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := settingsError(c.err, endpoint{host: registry})
			if c.want == "" {
				if got != c.err {
					t.Errorf("settingsError(%v) = %v, want it unchanged", c.err, got)
				}
				return
			}
			if !strings.Contains(got.Error(), c.want) || exitcode.Of(got) != c.exit || !errors.Is(got, c.err) {
				t.Errorf("settingsError(%v) = %v (exit %d), want exit %d, %q, wrapping the error", c.err, got, exitcode.Of(got), c.exit, c.want)
			}
			if again := settingsError(got, endpoint{host: registry}); again != got {
				t.Errorf("settingsError applied twice = %v, want the hint once", again)
			}
		})
	}
}

// TestProxied: where this process's environment sends the registry's
// requests through a proxy, the proxy's refusal (its answer to the tunnel,
// or its page for plain HTTP) is a usage error (exit 2) naming the proxy
// and NO_PROXY, and a proxy that cannot be reached says so and is left to
// be retried; a token service's request through it names that host. The
// errors are as net/http and containers/image return them (internal/proxy
// tests the first against a real proxy). Before, a Squid that denied the
// mirror was reported as the registry's "Forbidden", asked five times.
func TestProxied(t *testing.T) {
	for _, k := range []string{"https_proxy", "http_proxy", "no_proxy"} {
		t.Setenv(k, "")
	}
	t.Setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
	t.Setenv("HTTP_PROXY", "http://proxy.example.com:3128")
	t.Setenv("NO_PROXY", "")
	tlsAt := endpoint{host: "mirror.example.com:5000"}
	plainAt := endpoint{host: "mirror.example.com:5000", plain: true}
	ping := func(scheme string, err error) error {
		return fmt.Errorf("pinging container registry mirror.example.com:5000: %w", &url.Error{Op: "Get", URL: scheme + "://mirror.example.com:5000/v2/", Err: err})
	}
	unreachable := &net.OpError{Op: "proxyconnect", Net: "tcp", Err: errors.New("dial tcp 10.0.0.1:3128: connect: connection refused")}
	token := fmt.Errorf("fetching tags: %w", &url.Error{Op: "Get", URL: "https://auth.example.com/token?scope=repository%3At%3Apull", Err: errors.New("Forbidden")})
	cases := []struct {
		name string
		err  error
		at   endpoint
		exit int
		want string
	}{
		{"tunnel refused", ping("https", errors.New("Forbidden")), tlsAt, exitcode.Usage, "requests to mirror.example.com:5000 go through the proxy proxy.example.com:3128 (HTTPS_PROXY in this process's environment), which refuses them (403 Forbidden): add mirror.example.com to NO_PROXY"},
		{"plain HTTP refused with a page", fmt.Errorf("pinging container registry mirror.example.com:5000: %w", docker.UnexpectedHTTPStatusError{StatusCode: http.StatusForbidden}), plainAt, exitcode.Usage, "(HTTP_PROXY in this process's environment), which refuses them (403 Forbidden)"},
		{"proxy unreachable", ping("https", unreachable), tlsAt, exitcode.Failure, "go through the proxy proxy.example.com:3128 (HTTPS_PROXY in this process's environment), which cannot be reached"},
		{"token service refused", token, tlsAt, exitcode.Usage, "requests to auth.example.com go through the proxy proxy.example.com:3128"},
		{"TLS inspected", ping("https", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), tlsAt, exitcode.Usage, "which is the proxy's own when it inspects TLS: trust the CA that signed it"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := settingsError(c.err, c.at)
			if !strings.Contains(got.Error(), c.want) || exitcode.Of(got) != c.exit || !errors.Is(got, c.err) || strings.Count(got.Error(), "NO_PROXY") != 1 {
				t.Errorf("settingsError(%v) = %v (exit %d), want exit %d, %q once, wrapping the error", c.err, got, exitcode.Of(got), c.exit, c.want)
			}
			if again := settingsError(got, c.at); again != got {
				t.Errorf("settingsError applied twice = %v, want the hint once", again)
			}
			if got, want := transient(t.Context(), c.err, c.at), c.exit == exitcode.Failure; got != want {
				t.Errorf("transient(%v) = %t, want %t", c.err, got, want)
			}
		})
	}
}

// TestAuthFileNearMiss: an auth file with no entry that containers/image
// would use for the registry (another port, another host) is warned of
// when the destination opens, naming the entries it has; one whose entry
// applies, by host, namespace or legacy URL, is not. The registry's
// refusal would otherwise blame the credentials.
func TestAuthFileNearMiss(t *testing.T) {
	tests := []struct {
		name, file string
		warned     bool
	}{
		{"same host and port", `{"auths":{"mirror.example:5000":{"auth":"dTpw"}}}`, false},
		{"a namespace", `{"auths":{"mirror.example:5000/ocp":{"auth":"dTpw"}}}`, false},
		{"legacy URL", `{"auths":{"https://mirror.example:5000/v1/":{"auth":"dTpw"}}}`, false},
		{"a credential helper", `{"credHelpers":{"mirror.example:5000":"ecr-login"}}`, false},
		{"dockercfg", `{"mirror.example:5000":{"auth":"dTpw"}}`, false},
		{"another port", `{"auths":{"mirror.example:8443":{"auth":"dTpw"}}}`, true},
		{"no port", `{"auths":{"mirror.example":{"auth":"dTpw"},"quay.io":{"auth":"dTpw"}}}`, true},
		{"empty", `{}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "auth.json")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := newRegistry("//mirror.example:5000/ocp/etcd")
			if err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			d, err := open(r, destination.Options{Log: slog.New(slog.NewTextHandler(&log, nil)), ScratchDir: t.TempDir(), Registry: destination.RegistryOptions{AuthFile: path, Format: destination.FormatArtifact}})
			if err != nil {
				t.Fatal(err)
			}
			d.Close()
			warned := strings.Contains(log.String(), "has no entry for mirror.example:5000")
			if warned != tt.warned {
				t.Errorf("%s: warned %v, want %v:\n%s", tt.file, warned, tt.warned, log.String())
			}
			if strings.Contains(log.String(), "dTpw") {
				t.Errorf("the warning quotes a credential:\n%s", log.String())
			}
		})
	}
}
