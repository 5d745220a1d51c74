package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// TestGlobalFlagsBeforeCommand checks that the global flags work before the
// command as after it.
func TestGlobalFlagsBeforeCommand(t *testing.T) {
	notDir := t.TempDir() + "/missing"
	for _, args := range [][]string{
		{"--log-format", "json", "verify", notDir},
		{"--log-format=json", "--timeout", "5m", "verify", notDir},
		{"--timeout=5m", "--results-dir", t.TempDir(), "--log-format", "json", "verify", notDir},
		{"--metrics-file", t.TempDir() + "/m.prom", "--log-format", "json", "verify", notDir},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			// verify ran: the flags parsed, and its own error is JSON.
			_, _, stderr := cli(t, nil, args...)
			if msgs := assertJSONLines(t, stderr); !strings.Contains(strings.Join(msgs, "\n"), "is not a backup directory") {
				t.Errorf("want verify's own error:\n%s", stderr)
			}
		})
	}
	if code, stdout, _ := cli(t, nil, "--log-format", "json", "--help"); code != exitcode.OK || !strings.Contains(stdout, "Usage: etcd-backup") {
		t.Errorf("--log-format json --help: exit %d\n%s", code, stdout)
	}
}

// TestJSONLogsEverywhere checks that with --log-format json (or its
// environment variable) every line on stderr is one JSON value: usage
// errors found before and while parsing flags, and multi-line messages.
func TestJSONLogsEverywhere(t *testing.T) {
	jsonEnv := map[string]string{"ETCD_BACKUP_LOG_FORMAT": "json"}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown command", nil, []string{"--log-format", "json", "bakup"}, "unknown command"},
		{"unknown flag", nil, []string{"list", "--log-format=json", "--no-such-flag", "gs://b/p"}, "unknown flag"},
		{"bad value", jsonEnv, []string{"list", "--timeout", "soon", "gs://b/p"}, "--timeout"},
		{"missing argument", jsonEnv, []string{"download"}, "missing BACKUP"},
		{"two bad variables, one value", map[string]string{"ETCD_BACKUP_LOG_FORMAT": "json", "ETCD_BACKUP_TIMEOUT": "soon", "ETCD_BACKUP_KEEP_LAST": "many"}, []string{"prune", "gs://b/p"}, "$ETCD_BACKUP_KEEP_LAST"},
		{"runtime error", nil, []string{"verify", "--log-format", "json", t.TempDir() + "/missing"}, "missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, stderr := cli(t, c.env, c.args...)
			msgs := assertJSONLines(t, stderr)
			if !strings.Contains(strings.Join(msgs, "\n"), c.want) {
				t.Errorf("no message with %q:\n%s", c.want, stderr)
			}
		})
	}
}

// assertJSONLines fails unless every line of stderr is a JSON log record,
// and returns their messages.
func assertJSONLines(t *testing.T, stderr string) []string {
	t.Helper()
	var msgs []string
	for line := range strings.Lines(strings.TrimSpace(stderr)) {
		var rec struct {
			Msg   string `json:"msg"`
			Level string `json:"level"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Level == "" {
			t.Errorf("not a JSON log record: %q", line)
			continue
		}
		msgs = append(msgs, rec.Msg)
	}
	if len(msgs) == 0 {
		t.Error("nothing on stderr")
	}
	return msgs
}

// TestHelpExamples checks that each command's --help ends with examples of
// itself, and that upload's says where credentials come from and the layout.
func TestHelpExamples(t *testing.T) {
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, _ := cli(t, nil, c.name, "--help")
			_, examples, ok := strings.Cut(stdout, "\nExamples:\n")
			if code != exitcode.OK || !ok || !strings.Contains(examples, "etcd-backup "+c.name) {
				t.Errorf("exit %d, no examples of %s at the end:\n%s", code, c.name, stdout)
			}
		})
	}
	_, stdout, _ := cli(t, nil, "upload", "--help")
	for _, want := range []string{"GOOGLE_APPLICATION_CREDENTIALS", "Workload Identity", "<cluster-id>/<ts>-"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("upload --help does not mention %q", want)
		}
	}
}
