package metrics

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/etcd-backup/etcd-backup/internal/metrics/pushgatewaytest"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newLog() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

func mustParse(t *testing.T, s string) PushURL {
	t.Helper()
	u, err := ParsePushURL(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func savedRun(cluster string) *Run {
	r := &Run{Command: "upload", Start: t0, Destination: "gs://backups/etcd"}
	if cluster != "" {
		r.ClusterID = cluster
		r.Sizes = map[string]int64{"snapshot": 4096, "resources": 512}
		r.Revision = 42
	}
	return r
}

func at(d time.Duration, code int) Outcome { return Outcome{End: t0.Add(d), ExitCode: code} }

// TestPushKeepsLastSuccess pushes a success and then failures to a real
// Pushgateway: the failures update the attempt, success and exit code, and
// leave the last success as it was.
func TestPushKeepsLastSuccess(t *testing.T) {
	gw := pushgatewaytest.Start(t, pushgatewaytest.Options{})
	s := Sinks{Push: mustParse(t, gw.URL)}
	log, logs := newLog()
	group := map[string]string{"job": Job, LabelCommand: "upload", LabelCluster: "c1", LabelDestination: "gs://backups/etcd"}

	s.Report(t.Context(), log, savedRun("c1"), at(time.Minute, 0))
	s.Report(t.Context(), log, savedRun("c1"), at(time.Hour, 1))
	fams := gw.Families(t, "", "")
	want := map[string]float64{
		LastSuccess: seconds(t0.Add(time.Minute)),
		LastAttempt: seconds(t0.Add(time.Hour)),
		Success:     0,
		ExitCode:    1,
		Duration:    time.Hour.Seconds(),
		Revision:    42,
	}
	for name, v := range want {
		if got, ok := pushgatewaytest.Value(fams, name, group); !ok || got != v {
			t.Errorf("%s = %v (present %t), want %v", name, got, ok, v)
		}
	}
	for kind, v := range map[string]float64{"snapshot": 4096, "resources": 512} {
		labels := map[string]string{LabelKind: kind, LabelCluster: "c1"}
		if got, _ := pushgatewaytest.Value(fams, SizeBytes, labels); got != v {
			t.Errorf("size of %s = %v, want %v", kind, got, v)
		}
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warnings:\n%s", logs)
	}

	// A success again moves the last success.
	s.Report(t.Context(), log, savedRun("c1"), at(2*time.Hour, 0))
	fams = gw.Families(t, "", "")
	if got, _ := pushgatewaytest.Value(fams, LastSuccess, group); got != seconds(t0.Add(2*time.Hour)) {
		t.Errorf("last success after a new success = %v", got)
	}
}

// TestPushUnknownCluster checks that a failure before the cluster is known
// is pushed under cluster_id="unknown", and that the next success removes
// that group, so an alert on it resolves.
func TestPushUnknownCluster(t *testing.T) {
	gw := pushgatewaytest.Start(t, pushgatewaytest.Options{})
	s := Sinks{Push: mustParse(t, gw.URL)}
	log, _ := newLog()
	unknown := map[string]string{LabelCommand: "upload", LabelCluster: UnknownCluster}

	s.Report(t.Context(), log, savedRun(""), at(time.Minute, 3))
	if v, ok := pushgatewaytest.Value(gw.Families(t, "", ""), Success, unknown); !ok || v != 0 {
		t.Fatalf("failure of an unknown cluster: success = %v, present %t", v, ok)
	}
	s.Report(t.Context(), log, savedRun("c1"), at(time.Hour, 0))
	fams := gw.Families(t, "", "")
	if n := pushgatewaytest.Count(fams, Success, unknown); n != 0 {
		t.Errorf("the unknown cluster's failure is still there after a success")
	}
	if v, _ := pushgatewaytest.Value(fams, Success, map[string]string{LabelCluster: "c1"}); v != 1 {
		t.Errorf("success of c1 = %v", v)
	}
}

// TestPushAllClusters: prune over every cluster has no cluster_id label.
func TestPushAllClusters(t *testing.T) {
	gw := pushgatewaytest.Start(t, pushgatewaytest.Options{})
	s := Sinks{Push: mustParse(t, gw.URL)}
	log, _ := newLog()
	s.Report(t.Context(), log, &Run{Command: "prune", Start: t0, AllClusters: true, Destination: "gs://b/p"}, at(time.Second, 0))
	if v, ok := pushgatewaytest.Value(gw.Families(t, "", ""), Success, map[string]string{LabelCommand: "prune", LabelCluster: "", LabelDestination: "gs://b/p"}); !ok || v != 1 {
		t.Errorf("prune success = %v, present %t", v, ok)
	}
}

// TestPushCredentials pushes to a Pushgateway that requires basic
// authentication with the credentials in the URL, and checks that no log
// line shows the password, also when it is refused.
func TestPushCredentials(t *testing.T) {
	const user, password = "pusher", "s3cret-Pa55"
	gw := pushgatewaytest.Start(t, pushgatewaytest.Options{User: user, Password: password})
	withCreds := strings.Replace(gw.URL, "http://", "http://"+user+":"+password+"@", 1)
	wrong := strings.Replace(gw.URL, "http://", "http://"+user+":wrong-"+password+"@", 1)
	log, logs := newLog()

	Sinks{Push: mustParse(t, withCreds)}.Report(t.Context(), log, savedRun("c1"), at(time.Minute, 0))
	if v, ok := pushgatewaytest.Value(gw.Families(t, user, password), Success, map[string]string{LabelCluster: "c1"}); !ok || v != 1 {
		t.Errorf("success = %v, present %t\n%s", v, ok, logs)
	}
	Sinks{Push: mustParse(t, wrong)}.Report(t.Context(), log, savedRun("c1"), at(time.Hour, 1))
	if !strings.Contains(logs.String(), "metrics not pushed") || !strings.Contains(logs.String(), "401") {
		t.Errorf("no warning of the refused push:\n%s", logs)
	}
	if strings.Contains(logs.String(), password) {
		t.Errorf("the password is in the log:\n%s", logs)
	}
}

// TestPushUnreachable: a Pushgateway that is down, or accepts and never
// answers, costs a warning within the timeout and nothing else.
func TestPushUnreachable(t *testing.T) {
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + down.Addr().String()
	down.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close() // accepted by the kernel, never answered
	tests := map[string]struct{ url, says string }{
		"down":   {downURL, "connection refused"},
		"silent": {"http://" + silent.Addr().String(), "http://" + silent.Addr().String() + ": no answer within 1s: check that it is the Pushgateway's address"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			log, logs := newLog()
			const timeout = time.Second
			start := time.Now()
			Sinks{Push: mustParse(t, tt.url), Timeout: timeout}.Report(t.Context(), log, savedRun("c1"), at(time.Minute, 0))
			if d := time.Since(start); d > 5*timeout {
				t.Errorf("took %s with a timeout of %s", d, timeout)
			}
			if strings.Count(logs.String(), "level=WARN") != 1 || !strings.Contains(logs.String(), "metrics not pushed: push to ") || !strings.Contains(logs.String(), tt.says) {
				t.Errorf("want one warning saying %q:\n%s", tt.says, logs)
			}
		})
	}
}

// TestPushThroughRefusingProxy: a push through a proxy that turns the
// tunnel down says so, naming the proxy and NO_PROXY, and never the
// password. The proxy is real; the client is sent to it as the environment
// would send it (net/http reads the environment once per process, and
// never proxies loopback, so the test names the proxy itself).
func TestPushThroughRefusingProxy(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "denied", http.StatusForbidden)
	}))
	defer proxy.Close()
	for _, k := range []string{"https_proxy", "http_proxy", "no_proxy", "HTTP_PROXY", "NO_PROXY"} {
		t.Setenv(k, "")
	}
	t.Setenv("HTTPS_PROXY", proxy.URL)
	proxyURL, err := url.Parse(proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	const password = "s3cret-push"
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 5 * time.Second}
	err = mustParse(t, "https://robot:"+password+"@pushgateway.example.com:443").push(t.Context(), client, savedRun("c1"), at(time.Minute, 0))
	want := "requests to pushgateway.example.com:443 go through the proxy " + proxyURL.Host + " (HTTPS_PROXY in this process's environment), which refuses them (403 Forbidden): add pushgateway.example.com to NO_PROXY"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), password) {
		t.Errorf("push through a refusing proxy: %v; want %q, and no password", err, want)
	}
}

// TestPushPlainHTTPThroughProxy: a plain-HTTP push goes to the proxy as a
// request the proxy answers itself, so a refusal is a page of the proxy's,
// not a failed tunnel. The answers a Pushgateway never gives are said to be
// the proxy's, naming it and NO_PROXY; one a Pushgateway gives, passed on
// by the proxy, gets no hint, nor does any answer to a host in NO_PROXY.
// Either way the error is one line: the page's title, or its first line,
// not the page.
func TestPushPlainHTTPThroughProxy(t *testing.T) {
	const (
		password = "s3cret-push"
		title    = "ERROR: The proxy's policy denies this request"
		own      = `pushed metrics are invalid or inconsistent with existing metrics: collected metric "x" was collected before`
	)
	code := 0
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code == http.StatusBadRequest {
			http.Error(w, own, code)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(code)
		io.WriteString(w, "<!DOCTYPE html>\n<html><head>\n<title>\n"+strings.ReplaceAll(title, "'", "&#39;")+"\n</title>\n</head>\n<body>\n<p>Access denied.</p>\n"+strings.Repeat("<p>filler</p>\n", 10000)+"</body></html>\n")
	}))
	defer proxy.Close()
	proxyURL, err := url.Parse(proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	route := "requests to pushgateway.example.com:9091 go through the proxy " + proxyURL.Host + " (HTTP_PROXY in this process's environment), which "
	bypass := "add pushgateway.example.com to NO_PROXY"
	for _, tc := range []struct {
		name    string
		code    int
		noProxy string
		want    string
		hint    string // "" for none
	}{
		{"refused", http.StatusForbidden, "", "answered 403 Forbidden: " + title, route + "refuses them (403 Forbidden): " + bypass},
		{"credentials", http.StatusProxyAuthRequired, "", "answered 407 Proxy Authentication Required: " + title, route + "wants credentials (407 Proxy Authentication Required)"},
		{"no way through", http.StatusBadGateway, "", "answered 502 Bad Gateway: " + title, route + "answers 502 Bad Gateway: " + bypass},
		{"the Pushgateway's own answer", http.StatusBadRequest, "", "answered 400 Bad Request: " + own, ""},
		{"host in NO_PROXY", http.StatusForbidden, "pushgateway.example.com", "answered 403 Forbidden: " + title, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"https_proxy", "http_proxy", "no_proxy", "HTTPS_PROXY"} {
				t.Setenv(k, "")
			}
			t.Setenv("HTTP_PROXY", proxy.URL)
			t.Setenv("NO_PROXY", tc.noProxy)
			code = tc.code
			client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 5 * time.Second}
			err := mustParse(t, "http://robot:"+password+"@pushgateway.example.com:9091").push(t.Context(), client, savedRun("c1"), at(time.Minute, 0))
			if err == nil {
				t.Fatal("push succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, password) || strings.ContainsAny(msg, "\n<") {
				t.Errorf("error holds the password, or more than one line of the page: %q", msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("push answered %d: %v; want %q", tc.code, err, tc.want)
			}
			if got := strings.Contains(msg, "NO_PROXY"); got != (tc.hint != "") || !strings.Contains(msg, tc.hint) {
				t.Errorf("push answered %d: %v; want the hint %q", tc.code, err, tc.hint)
			}
		})
	}
}

// TestFile writes a success and then a failure: the file holds the
// failure, and still the last success, in the text format.
func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etcd-backup-upload.prom")
	s := Sinks{File: path}
	log, logs := newLog()
	s.Report(t.Context(), log, savedRun("c1"), at(time.Minute, 0))
	s.Report(t.Context(), log, savedRun(""), at(time.Hour, 1))
	if logs.Len() != 0 {
		t.Errorf("log:\n%s", logs)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != FileMode {
		t.Errorf("mode %v, want %v", fi.Mode().Perm(), FileMode)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(f)
	if err != nil {
		t.Fatal(err)
	}
	c1 := map[string]string{LabelCommand: "upload", LabelCluster: "c1", LabelDestination: "gs://backups/etcd"}
	unknown := map[string]string{LabelCommand: "upload", LabelCluster: UnknownCluster}
	if v, ok := pushgatewaytest.Value(fams, LastSuccess, c1); !ok || v != seconds(t0.Add(time.Minute)) {
		t.Errorf("last success of c1 = %v, present %t", v, ok)
	}
	if v, ok := pushgatewaytest.Value(fams, Success, unknown); !ok || v != 0 {
		t.Errorf("success = %v, present %t", v, ok)
	}
	if v, _ := pushgatewaytest.Value(fams, ExitCode, unknown); v != 1 {
		t.Errorf("exit code = %v", v)
	}
	if n := pushgatewaytest.Count(fams, Success, c1); n != 0 {
		t.Errorf("the earlier run's success series is still there")
	}
	if mf := fams[LastSuccess]; mf.GetType().String() != "GAUGE" || mf.GetHelp() == "" {
		t.Errorf("last success family: %v", mf)
	}
}

// TestFileUnwritable: a metrics file that cannot be written costs a
// warning naming it. node-exporter's textfile directory, given for a file
// in it, is told to get a file of its own there, never pointed at the one
// file of another program's it holds.
func TestFileUnwritable(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.prom")
	if err := os.WriteFile(garbage, []byte("not { metrics\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	textfiles := t.TempDir()
	other := filepath.Join(textfiles, "node.prom")
	if err := os.WriteFile(other, []byte("node_up 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path, says string
	}{
		{"no directory", filepath.Join(dir, "none", "m.prom"), ""},
		{"not metrics", garbage, ""},
		{"the textfile directory", textfiles, "give --metrics-file a file of its own in it, e.g. " + filepath.Join(textfiles, "etcd-backup-upload.prom")},
	} {
		t.Run(c.name, func(t *testing.T) {
			log, logs := newLog()
			Sinks{File: c.path}.Report(t.Context(), log, savedRun("c1"), at(time.Minute, 0))
			if !strings.Contains(logs.String(), "metrics file not written") || !strings.Contains(logs.String(), c.path) || !strings.Contains(logs.String(), c.says) {
				t.Errorf("want a warning naming %s and saying %q:\n%s", c.path, c.says, logs)
			}
			if strings.Contains(logs.String(), other) {
				t.Errorf("the warning points at another program's metrics file:\n%s", logs)
			}
		})
	}
	if data, err := os.ReadFile(other); err != nil || string(data) != "node_up 1\n" {
		t.Errorf("another program's metrics file is now %q (%v)", data, err)
	}
}

func TestParsePushURL(t *testing.T) {
	const secret = "hunter2"
	tests := []struct {
		in, want, err string
	}{
		{in: "http://127.0.0.1:9091", want: "http://127.0.0.1:9091"},
		{in: "https://u:" + secret + "@pushgateway.example.com/base", want: "https://pushgateway.example.com/base"},
		{in: "127.0.0.1:9091", err: "want http(s)://"},
		{in: "ftp://u:" + secret + "@h", err: "want http(s)://"},
		{in: "http://u:" + secret + "@h:9091/?x=1", err: "no query"},
		{in: "http://u:" + secret + "@h:bad port", err: "want http(s)://"},
	}
	for _, tt := range tests {
		u, err := ParsePushURL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), secret) {
				t.Errorf("ParsePushURL(%q) = %v, want an error with %q and no password", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || u.String() != tt.want {
			t.Errorf("ParsePushURL(%q) = %q, %v; want %q", tt.in, u, err, tt.want)
		}
	}
}
