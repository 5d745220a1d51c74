package metrics

import (
	"bytes"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// FuzzParsePushURL: whatever the input, an error never repeats a password,
// and String never shows one.
func FuzzParsePushURL(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:9091", "https://u:p4ss@h:1/x", "h:1", "http://u:p4ss@h:x", "http://:p4ss@[::1]:9/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParsePushURL(s)
		password := ""
		if raw, perr := url.Parse(s); perr == nil && raw.User != nil {
			password, _ = raw.User.Password()
		}
		if len(password) < 4 { // too short to tell from the rest of a message
			return
		}
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("error %q shows the password", err)
		}
		if err == nil && strings.Contains(u.String(), password) {
			t.Errorf("String() = %q shows the password", u)
		}
	})
}

// FuzzMetricsFile: whatever an earlier metrics file holds, a run either
// replaces it with a file that parses, or leaves it and warns.
func FuzzMetricsFile(f *testing.F) {
	f.Add([]byte("# TYPE etcd_backup_last_success_timestamp_seconds gauge\netcd_backup_last_success_timestamp_seconds{command=\"save\",cluster_id=\"c\"} 1.5e9\n"))
	f.Add([]byte("etcd_backup_last_success_timestamp_seconds 1\n"))
	f.Add([]byte("# TYPE etcd_backup_last_success_timestamp_seconds counter\netcd_backup_last_success_timestamp_seconds 3\n"))
	f.Add([]byte("garbage{"))
	f.Fuzz(func(t *testing.T, earlier []byte) {
		path := filepath.Join(t.TempDir(), "m.prom")
		if err := os.WriteFile(path, earlier, 0o600); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		r := &Run{Command: "save", Start: t0, ClusterID: "c1"}
		Sinks{File: path}.Report(t.Context(), slog.New(slog.NewTextHandler(&logs, nil)), r, Outcome{End: t0.Add(time.Second)})
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(data, earlier) {
			if !strings.Contains(logs.String(), "metrics file not written") {
				t.Errorf("file left as it was, with no warning")
			}
			return
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		if _, err := parser.TextToMetricFamilies(bytes.NewReader(data)); err != nil {
			t.Errorf("the file written does not parse: %v\n%s", err, data)
		}
	})
}

// FuzzGist: whatever page refuses a push, its gist fits in one line of a
// log, bounded.
func FuzzGist(f *testing.F) {
	for _, s := range []string{"", "\n\n  pushed metrics are invalid\nsecond line", "<html><TITLE lang=en>\nAccess &amp; denied\n</TITLE>", "<title>", strings.Repeat("é", 600)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, page []byte) {
		g := gist(page)
		if strings.ContainsAny(g, "\r\n") || utf8.RuneCountInString(g) > maxGist+1 {
			t.Errorf("gist(%q) = %q: not one bounded line", page, g)
		}
	})
}
