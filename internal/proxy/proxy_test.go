package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// env sets the proxy variables of this process to proxy for both schemes,
// with noProxy, clearing their lower-case forms.
func env(t *testing.T, proxy, noProxy string) {
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"} {
		t.Setenv(k, "")
	}
	t.Setenv("HTTPS_PROXY", proxy)
	t.Setenv("HTTP_PROXY", proxy)
	t.Setenv("NO_PROXY", noProxy)
}

// through asks for u through the proxy at proxyURL, with net/http's own
// transport, and returns its error.
func through(t *testing.T, proxyURL, u string) error {
	p, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(p)}}
	resp, err := c.Get(u)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET %s through %s succeeded", u, proxyURL)
	}
	return err
}

// TestHint: a real proxy in front of a host the environment does not
// exempt turns down the tunnel (403, 407: refused, no retry), answers a
// tunnel with 502, presents a certificate of its own (as one that inspects
// TLS does: refused), or cannot be reached at all; each is said to be the
// proxy's doing, naming the host, the proxy (never its password) and
// NO_PROXY. A host in NO_PROXY, or an error that is not the proxy's, gets
// no hint.
func TestHint(t *testing.T) {
	status := 0
	// A certificate nothing here trusts, as a proxy that inspects TLS
	// presents for every host.
	own := httptest.NewUnstartedServer(nil)
	own.StartTLS()
	own.Close()
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status != http.StatusOK {
			http.Error(w, "<html>Access Denied</html>", status)
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		tls.Server(conn, &tls.Config{Certificates: own.TLS.Certificates}).Handshake()
	}))
	defer proxy.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + closed.Addr().String()
	closed.Close()
	withPassword := strings.Replace(proxy.URL, "http://", "http://robot:s3cret@", 1)
	const target = "https://mirror.example.com:5000/v2/"
	cases := []struct {
		name    string
		status  int    // the proxy's answer to CONNECT
		proxy   string // in the environment and asked
		noProxy string
		refused bool
		want    string // "" for no hint
	}{
		{"forbidden", http.StatusForbidden, withPassword, "", true, "requests to mirror.example.com:5000 go through the proxy " + strings.TrimPrefix(proxy.URL, "http://") + " (HTTPS_PROXY in this process's environment), which refuses them (403 Forbidden): add mirror.example.com to NO_PROXY"},
		{"wants credentials", http.StatusProxyAuthRequired, proxy.URL, "", true, "which wants credentials (407 Proxy Authentication Required): give them in HTTPS_PROXY as http://USER:PASSWORD@" + strings.TrimPrefix(proxy.URL, "http://") + ", or add mirror.example.com to NO_PROXY"},
		{"credentials refused", http.StatusProxyAuthRequired, withPassword, "", true, "which wants credentials (407 Proxy Authentication Required)"},
		{"bad gateway", http.StatusBadGateway, proxy.URL, "", false, "which answers 502 Bad Gateway: add mirror.example.com to NO_PROXY"},
		{"unreachable", 0, gone, "", false, "which cannot be reached: check the proxy, or add mirror.example.com to NO_PROXY"},
		{"inspecting TLS", http.StatusOK, proxy.URL, "", true, "and no CA trusted here vouches for the certificate presented, which is the proxy's own when it inspects TLS: trust the CA that signed it"},
		{"exempt", http.StatusForbidden, proxy.URL, "mirror.example.com", false, ""},
		{"exempt by domain", http.StatusForbidden, proxy.URL, ".example.com", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env(t, c.proxy, c.noProxy)
			status = c.status
			err := through(t, c.proxy, target)
			hint, refused := Hint(err, nil, 0)
			if c.want == "" {
				if hint != "" {
					t.Errorf("Hint(%v) = %q, want none", err, hint)
				}
				return
			}
			if !strings.Contains(hint, c.want) || refused != c.refused || strings.Contains(hint, "s3cret") {
				t.Errorf("Hint(%v) = %q, %t; want %q, refused %t, and no password", err, hint, refused, c.want, c.refused)
			}
		})
	}
}

// TestHintPage: a status answered with a page instead of the host's own
// answer (such an error names no URL) is the proxy's for plain HTTP through
// a proxy, and said to be; through TLS, or with no proxy, it is the host's.
func TestHintPage(t *testing.T) {
	notProxy := errors.New("registry answered StatusCode: 403")
	plain := &url.URL{Scheme: "http", Host: "mirror.example.com:5000"}
	tls := &url.URL{Scheme: "https", Host: "mirror.example.com:5000"}
	cases := []struct {
		name    string
		proxy   string
		asked   *url.URL
		refused bool
		want    string
	}{
		{"plain HTTP through a proxy", "http://proxy.example.com:3128", plain, true, "requests to mirror.example.com:5000 go through the proxy proxy.example.com:3128 (HTTP_PROXY in this process's environment), which refuses them (403 Forbidden)"},
		{"TLS through a proxy", "http://proxy.example.com:3128", tls, false, ""},
		{"no proxy", "", plain, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env(t, c.proxy, "")
			hint, refused := Hint(notProxy, c.asked, http.StatusForbidden)
			if !strings.Contains(hint, c.want) || (c.want == "") != (hint == "") || refused != c.refused {
				t.Errorf("Hint = %q, %t; want %q, refused %t", hint, refused, c.want, c.refused)
			}
		})
	}
}
