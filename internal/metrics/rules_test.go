package metrics

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/etcd-backup/etcd-backup/internal/metrics/pushgatewaytest"
)

const (
	monitoringDir = "../../pipelines/monitoring"
	readmePath    = "../../README.md"
)

// prometheusRule is the part of the PrometheusRule the checks below read.
type prometheusRule struct {
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// TestAlertRules runs promtool's check and unit tests (tests/*.yaml) on
// the PrometheusRule's groups, which promtool reads as a plain rules file.
func TestAlertRules(t *testing.T) {
	promtool := pushgatewaytest.RequireBinary(t, "promtool", "prometheus")
	data, err := os.ReadFile(filepath.Join(monitoringDir, "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		t.Fatal(err)
	}
	groups, err := yaml.Marshal(doc["spec"])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The unit tests name it in rule_files.
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), groups, 0o600); err != nil {
		t.Fatal(err)
	}
	tests, err := filepath.Glob(filepath.Join(monitoringDir, "tests", "*.yaml"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no promtool unit tests in %s/tests: %v", monitoringDir, err)
	}
	var names []string
	for _, p := range tests {
		content, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(p)
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	runPromtool(t, dir, promtool, "check", "rules", "rules.yaml")
	runPromtool(t, dir, promtool, append([]string{"test", "rules"}, names...)...)
}

func runPromtool(t *testing.T, dir, promtool string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), promtool, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var metricName = regexp.MustCompile(`etcd_backup_[a-z_]+`)

// TestAlertRulesMatch checks what promtool cannot: that the rules use only
// series this package writes, and that each alert's runbook is in the README.
func TestAlertRulesMatch(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(monitoringDir, "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule prometheusRule
	if err := yaml.Unmarshal(data, &rule); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	known := []string{LastSuccess, LastAttempt, Success, Duration, ExitCode, SizeBytes, Revision, NewestGoodTimestamp, NewestGoodAgeSeconds, CorruptBackups}
	var alerts []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			for _, name := range metricName.FindAllString(r.Expr+r.Annotations["description"], -1) {
				if !slices.Contains(known, name) {
					t.Errorf("%s uses %s, which etcd-backup does not write", r.Alert, name)
				}
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s has no %s", r.Alert, a)
				}
			}
			anchor := strings.ToLower(r.Alert)
			if !strings.HasSuffix(r.Annotations["runbook_url"], "README.md#"+anchor) {
				t.Errorf("%s: runbook_url %q does not point at README.md#%s", r.Alert, r.Annotations["runbook_url"], anchor)
			}
			if !regexp.MustCompile(`(?m)^#+ ` + r.Alert + `$`).Match(readme) {
				t.Errorf("README has no heading %q for the runbook_url of %s", r.Alert, r.Alert)
			}
		}
	}
	for _, want := range []string{"EtcdBackupFailing", "EtcdBackupStale", "EtcdBackupVerifyFailing", "EtcdBackupCorrupt"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}
}
