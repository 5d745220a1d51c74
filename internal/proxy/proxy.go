// Package proxy tells, of a failed HTTP request, whether the proxy that
// this process's environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) sends it
// through is what failed it: a pod's proxy settings often come from the
// cluster's, and a host missing from NO_PROXY then fails with the proxy's
// answer, which reads as the host's own.
package proxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"golang.org/x/net/http/httpproxy"
)

// Hint says what to do when err, the error of a request, comes from the
// proxy in its way: the proxy could not be reached, refused to open a
// tunnel to the host (net/http reports that by the status text alone),
// presented a certificate of its own that nothing here vouches for, or,
// for plain HTTP, answered with a page of its own. page is the status of
// a page that err reports instead of the host's own answer, 0 if none,
// and asked the URL of that request, which such an error does not name.
// refused is set when the proxy turned the request down (403, 407), or the
// certificate is not trusted: no retry can cure that. hint is "" when no
// proxy is in the way, or it did not fail the request.
//
// The environment is read here, not once: net/http caches it per process.
func Hint(err error, asked *url.URL, page int) (hint string, refused bool) {
	var ue *url.Error
	code := 0
	if errors.As(err, &ue) {
		u, perr := url.Parse(ue.URL)
		if perr != nil {
			return "", false
		}
		asked, code = u, status(ue.Err)
	} else if asked != nil && asked.Scheme == "http" {
		// Through TLS, a page can only be the host's.
		code = page
	}
	if asked == nil {
		return "", false
	}
	via, perr := httpproxy.FromEnvironment().ProxyFunc()(asked)
	if perr != nil || via == nil {
		return "", false
	}
	env := "HTTP_PROXY"
	if asked.Scheme == "https" {
		env = "HTTPS_PROXY"
	}
	// The proxy's host only: its URL may hold a password.
	route := fmt.Sprintf("requests to %s go through the proxy %s (%s in this process's environment)", asked.Host, via.Host, env)
	bypass := fmt.Sprintf("add %s to NO_PROXY (on OpenShift, to the cluster proxy's spec.noProxy, when the pod's proxy settings come from it)", asked.Hostname())
	var op *net.OpError
	var unknownCA x509.UnknownAuthorityError
	switch {
	case errors.As(err, &unknownCA) && asked.Scheme == "https":
		return route + ", and no CA trusted here vouches for the certificate presented, which is the proxy's own when it inspects TLS: trust the CA that signed it (the cluster's trusted CA bundle, which OpenShift Pipelines gives the Tasks, or the ca-bundle workspace or ConfigMap; by hand, a directory of PEM files in SSL_CERT_DIR), or " + bypass, true
	case errors.As(err, &op) && op.Op == "proxyconnect":
		return route + ", which cannot be reached: check the proxy, or " + bypass + " if it is to be reached directly", false
	case code == http.StatusProxyAuthRequired:
		return fmt.Sprintf("%s, which wants credentials (%d %s): give them in %s as http://USER:PASSWORD@%s, or %s", route, code, http.StatusText(code), env, via.Host, bypass), true
	case code == http.StatusForbidden:
		return fmt.Sprintf("%s, which refuses them (%d %s): %s, or have the proxy let them through", route, code, http.StatusText(code), bypass), true
	case code != 0:
		return fmt.Sprintf("%s, which answers %d %s: %s, or have the proxy's administrators check its way there", route, code, http.StatusText(code), bypass), false
	}
	return "", false
}

// status returns the HTTP status whose text alone err is: how net/http
// reports a proxy's refusal of a tunnel. 0 for any other error.
func status(err error) int {
	if err == nil {
		return 0
	}
	for code := 400; code < 600; code++ {
		if t := http.StatusText(code); t != "" && t == err.Error() {
			return code
		}
	}
	return 0
}
