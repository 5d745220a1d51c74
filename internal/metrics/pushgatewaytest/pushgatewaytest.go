// Package pushgatewaytest runs a real Prometheus Pushgateway (Debian's
// prometheus-pushgateway) on loopback for tests, and reads back the series
// pushed to it.
package pushgatewaytest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"
)

// Binary is the Pushgateway's executable name in Debian.
const Binary = "prometheus-pushgateway"

// startTimeout bounds how long the Pushgateway may take to listen.
const startTimeout = 30 * time.Second

// RequireBinary returns the path of an executable the test needs. When it
// is missing the test is skipped on a workstation, and fails in CI
// ($CI=true), where .ci/run installs it.
func RequireBinary(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found: install Debian's %s package", name, debianPackage)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Gateway is a running Pushgateway.
type Gateway struct {
	// URL is its address, http://127.0.0.1:PORT.
	URL string
}

// Options configure Start.
type Options struct {
	// User and Password, when set, are required by basic authentication.
	User, Password string
}

var listening = regexp.MustCompile(`msg="Listening on" address=(\S+)`)

// Start runs a Pushgateway, in memory only, for the duration of the test.
func Start(t testing.TB, o Options) *Gateway {
	t.Helper()
	RequireBinary(t, Binary, "prometheus-pushgateway")
	var args []string
	if o.User != "" {
		args = append(args, "--web.config.file="+webConfig(t, o))
	}
	g, stop, err := Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return g
}

// Run runs a Pushgateway, in memory only, on loopback with extra flags, and
// returns it with the function that stops it. The demo runs it too.
func Run(extra ...string) (*Gateway, func(), error) {
	args := append([]string{"--web.listen-address=127.0.0.1:0", "--persistence.file=", "--log.level=info"}, extra...)
	cmd := exec.Command(Binary, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", Binary, err)
	}
	stop := func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
	// The Pushgateway logs its address once it listens: port 0 is resolved,
	// and nothing needs polling.
	addr := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			if m := listening.FindStringSubmatch(s.Text()); m != nil {
				addr <- m[1]
				break
			}
		}
		close(addr)
		for s.Scan() { // drain, so that it never blocks on a full pipe
		}
	}()
	select {
	case a, ok := <-addr:
		if ok {
			return &Gateway{URL: "http://" + a}, stop, nil
		}
		err = fmt.Errorf("%s exited before listening", Binary)
	case <-time.After(startTimeout):
		err = fmt.Errorf("%s did not listen within %s", Binary, startTimeout)
	}
	stop()
	return nil, nil, err
}

// webConfig writes the exporter-toolkit web config that requires o's
// credentials.
func webConfig(t testing.TB, o Options) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "web.yml")
	content := fmt.Sprintf("basic_auth_users:\n  %q: %q\n", o.User, hash)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// barrierJob is the job of the push that Families makes first.
const barrierJob = "pushgatewaytest_barrier"

// Families returns what the Pushgateway exposes on /metrics, by name, once
// it has applied every push and delete made before the call. It answers a
// delete (202) before it applies it, but applies writes one at a time in
// the order they came, and answers a push (checked, its default) only once
// applied: so Families pushes to a group of its own first.
func (g *Gateway) Families(t testing.TB, user, password string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	do := func(method, path, body string, want int) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, g.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want {
			resp.Body.Close()
			t.Fatalf("%s %s%s: %s", method, g.URL, path, resp.Status)
		}
		return resp
	}
	do(http.MethodPut, "/metrics/job/"+barrierJob, barrierJob+" 1\n", http.StatusOK).Body.Close()
	resp := do(http.MethodGet, "/metrics", "", http.StatusOK)
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// Value finds the series name{labels} among families: its value, and
// whether it is there. Labels not given may have any value; a label given
// as "" must be absent.
func Value(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	mf := families[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.Metric {
		if matches(m, labels) {
			if m.Gauge != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// Count is how many series of name match labels.
func Count(families map[string]*dto.MetricFamily, name string, labels map[string]string) int {
	mf := families[name]
	if mf == nil {
		return 0
	}
	return len(slices.DeleteFunc(slices.Clone(mf.Metric), func(m *dto.Metric) bool { return !matches(m, labels) }))
}

func matches(m *dto.Metric, labels map[string]string) bool {
	for name, value := range labels {
		has := slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == name && l.GetValue() == value })
		if value == "" {
			has = !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == name })
		}
		if !has {
			return false
		}
	}
	return true
}
