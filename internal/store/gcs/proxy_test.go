package gcs

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// TestProxied: a request to Cloud Storage that the proxy of this process's
// environment turns down is a usage error (exit 2) naming the proxy and
// NO_PROXY, not the bucket's IAM roles; one that cannot reach the proxy
// says so. The errors are as net/http returns them (internal/proxy tests
// that against a real proxy). Before, the first was only "Forbidden".
func TestProxied(t *testing.T) {
	for _, k := range []string{"https_proxy", "http_proxy", "no_proxy", "HTTP_PROXY", "NO_PROXY"} {
		t.Setenv(k, "")
	}
	t.Setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
	get := func(err error) error {
		return fmt.Errorf("storage: %w", &url.Error{Op: "Get", URL: "https://storage.googleapis.com/storage/v1/b/backups/o/x", Err: err})
	}
	cases := []struct {
		name string
		err  error
		exit int
		want string
	}{
		{"refused", get(errors.New("Forbidden")), exitcode.Usage, "requests to storage.googleapis.com go through the proxy proxy.example.com:3128 (HTTPS_PROXY in this process's environment), which refuses them (403 Forbidden): add storage.googleapis.com to NO_PROXY"},
		{"unreachable", get(&net.OpError{Op: "proxyconnect", Net: "tcp", Err: errors.New("dial tcp 10.0.0.1:3128: connect: connection refused")}), exitcode.Failure, "which cannot be reached: check the proxy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := (&Bucket{}).mapErr(c.err, nil)
			if !strings.Contains(got.Error(), c.want) || exitcode.Of(got) != c.exit || !errors.Is(got, c.err) {
				t.Errorf("mapErr(%v) = %v (exit %d), want exit %d, %q", c.err, got, exitcode.Of(got), c.exit, c.want)
			}
		})
	}
}
