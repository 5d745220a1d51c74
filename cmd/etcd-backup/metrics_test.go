package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/metrics"
	"github.com/etcd-backup/etcd-backup/internal/metrics/pushgatewaytest"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// series is a label set to find in the Pushgateway's /metrics.
type series map[string]string

func wantValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels series, want float64) {
	t.Helper()
	got, ok := pushgatewaytest.Value(fams, name, labels)
	if !ok || got != want {
		t.Errorf("%s%v = %v (present %t), want %v", name, labels, got, ok, want)
	}
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// TestMetricsSave takes a backup that preflight refuses and then one that
// succeeds, pushing to a real Pushgateway and writing a metrics file.
func TestMetricsSave(t *testing.T) {
	gw := pushgatewaytest.Start(t, pushgatewaytest.Options{})
	m := newMaster(t, testcluster.Options{Keys: 20})
	m.env["ETCD_BACKUP_METRICS_PUSH_URL"] = gw.URL // as the Task passes it
	file := filepath.Join(t.TempDir(), "etcd-backup-save.prom")

	if code, stderr := m.save(t, t.TempDir(), "--min-cluster-age", "876000h", "--metrics-file", file); code != exitcode.Preflight {
		t.Fatalf("save of a too young cluster: exit %d\n%s", code, stderr)
	}
	unknown := series{"job": metrics.Job, "command": "save", "cluster_id": metrics.UnknownCluster}
	fams := gw.Families(t, "", "")
	wantValue(t, fams, metrics.Success, unknown, 0)
	wantValue(t, fams, metrics.ExitCode, unknown, exitcode.Preflight)
	if n := pushgatewaytest.Count(fams, metrics.LastSuccess, series{"command": "save"}); n != 0 {
		t.Errorf("a failed save pushed a last success")
	}

	dir := t.TempDir()
	if code, stderr := m.save(t, dir, "--metrics-file", file); code != 0 {
		t.Fatalf("save: exit %d\n%s", code, stderr)
	}
	b := readManifest(t, dir)
	ok := series{"job": metrics.Job, "command": "save", "cluster_id": b.ClusterKey(), "destination": ""}
	fams = gw.Families(t, "", "")
	wantValue(t, fams, metrics.Success, ok, 1)
	wantValue(t, fams, metrics.ExitCode, ok, 0)
	wantValue(t, fams, metrics.Revision, ok, float64(b.Etcd.Revision))
	for _, f := range b.Files {
		wantValue(t, fams, metrics.SizeBytes, series{"cluster_id": b.ClusterKey(), "kind": f.Kind}, float64(f.Size))
	}
	if n := pushgatewaytest.Count(fams, metrics.Success, unknown); n != 0 {
		t.Errorf("the failure of an unknown cluster is still pushed after a success")
	}
	last, _ := pushgatewaytest.Value(fams, metrics.LastSuccess, ok)
	if created := seconds(b.CreatedAt); last < created || last > created+60 {
		t.Errorf("last success %v, backup created at %v", last, created)
	}

	fileFams := readMetricsFile(t, file)
	wantValue(t, fileFams, metrics.Success, series{"command": "save", "cluster_id": b.ClusterKey(), "job": ""}, 1)
	wantValue(t, fileFams, metrics.LastSuccess, series{"command": "save", "cluster_id": b.ClusterKey()}, last)
}

func readMetricsFile(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
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
	return fams
}

// TestMetricsRemoteCommands drives upload, verify --latest --max-age and
// prune against the GCS emulator, each pushing to a real Pushgateway, and
// checks what a failure leaves of the last success.
func TestMetricsRemoteCommands(t *testing.T) {
	dir, b := savedBackup(t, 50)
	gw := pushgatewaytest.Start(t, pushgatewaytest.Options{})
	srv := gcstest.New(t, "backups")
	env := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host(), "ETCD_BACKUP_METRICS_PUSH_URL": gw.URL}
	const dest = "gs://backups/etcd"
	group := func(command string) series {
		return series{"job": metrics.Job, "command": command, "cluster_id": b.ClusterKey(), "destination": dest}
	}

	if code, _, stderr := cli(t, env, "upload", dir, dest); code != 0 {
		t.Fatalf("upload: exit %d\n%s", code, stderr)
	}
	fams := gw.Families(t, "", "")
	wantValue(t, fams, metrics.Success, group("upload"), 1)
	wantValue(t, fams, metrics.SizeBytes, series{"command": "upload", "kind": manifest.KindSnapshot}, float64(b.File(manifest.KindSnapshot).Size))
	lastUpload, _ := pushgatewaytest.Value(fams, metrics.LastSuccess, group("upload"))

	// The same upload fails when the service is down.
	down := map[string]string{"STORAGE_EMULATOR_HOST": gcstest.DeadHost(t), "ETCD_BACKUP_METRICS_PUSH_URL": gw.URL}
	// The push follows the run even when --timeout has ended its context.
	if code, _, stderr := cli(t, down, "upload", "--timeout", "2s", dir, dest); code != exitcode.Failure || !strings.Contains(stderr, "--timeout 2s reached") || !strings.Contains(stderr, "metrics pushed to "+gw.URL) {
		t.Fatalf("upload to a service that is down: exit %d, want %d after --timeout, then pushed:\n%s", code, exitcode.Failure, stderr)
	}
	fams = gw.Families(t, "", "")
	wantValue(t, fams, metrics.Success, group("upload"), 0)
	wantValue(t, fams, metrics.LastSuccess, group("upload"), lastUpload)

	if code, _, stderr := cli(t, env, "verify", "--latest", "--max-age", "1h", dest); code != 0 {
		t.Fatalf("verify --latest --max-age 1h: exit %d\n%s", code, stderr)
	}
	fams = gw.Families(t, "", "")
	wantValue(t, fams, metrics.Success, group("verify"), 1)
	wantValue(t, fams, metrics.NewestGoodTimestamp, group("verify"), seconds(b.CreatedAt))
	lastVerify, _ := pushgatewaytest.Value(fams, metrics.LastSuccess, group("verify"))
	age, _ := pushgatewaytest.Value(fams, metrics.NewestGoodAgeSeconds, group("verify"))
	if age <= 0 || age > 3600 {
		t.Errorf("newest good backup age %v s", age)
	}

	code, _, stderr := cli(t, env, "verify", "--latest", "--max-age", "1ms", dest)
	if code != exitcode.Stale || !strings.Contains(stderr, "more than --max-age 1ms") {
		t.Fatalf("verify --max-age 1ms: exit %d, want %d:\n%s", code, exitcode.Stale, stderr)
	}
	fams = gw.Families(t, "", "")
	wantValue(t, fams, metrics.Success, group("verify"), 0)
	wantValue(t, fams, metrics.ExitCode, group("verify"), exitcode.Stale)
	wantValue(t, fams, metrics.LastSuccess, group("verify"), lastVerify)

	if code, _, stderr := cli(t, env, "prune", "--keep-last", "1", dest); code != 0 {
		t.Fatalf("prune: exit %d\n%s", code, stderr)
	}
	wantValue(t, gw.Families(t, "", ""), metrics.Success, series{"command": "prune", "cluster_id": "", "destination": dest}, 1)
}

// TestMetricsCorruptBackups cuts short the snapshot of the oldest of three
// backups in a layout, as damaged media would: verify --latest still
// passes, on the newest, and must count the corrupt one so that
// EtcdBackupCorrupt fires; before the damage it counts none.
func TestMetricsCorruptBackups(t *testing.T) {
	bs, layout := uploadedLayout(t)
	dest := "oci:" + layout
	file := filepath.Join(t.TempDir(), "etcd-backup-verify.prom")
	group := series{"command": "verify", "cluster_id": bs[0].Manifest.ClusterKey(), "destination": dest}
	corrupt := func(want float64) {
		t.Helper()
		if code, _, stderr := cli(t, nil, "verify", "--latest", "--metrics-file", file, dest); code != 0 {
			t.Fatalf("verify --latest: exit %d\n%s", code, stderr)
		}
		wantValue(t, readMetricsFile(t, file), metrics.CorruptBackups, group, want)
	}
	corrupt(0)
	blob := filepath.Join(layout, "blobs", "sha256", bs[0].Manifest.File(manifest.KindSnapshot).SHA256)
	if err := os.Truncate(blob, 4096); err != nil {
		t.Fatal(err)
	}
	corrupt(1)
}

// TestVerifyMaxAge checks exit code 5 where no good backup is recent
// enough, or there is none, and that without --max-age age does not matter.
func TestVerifyMaxAge(t *testing.T) {
	dir, b := savedBackup(t, 20)
	srv := gcstest.New(t, "backups", "empty")
	env := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host()}
	if code, _, stderr := cli(t, env, "upload", dir, "gs://backups/etcd"); code != 0 {
		t.Fatalf("upload: exit %d\n%s", code, stderr)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"recent enough", []string{"--latest", "--max-age", "1h", "gs://backups/etcd"}, exitcode.OK, "backup verified"},
		{"too old", []string{"--latest", "--max-age", "1ms", "gs://backups/etcd"}, exitcode.Stale, "more than --max-age"},
		{"of the cluster given", []string{"--latest", "--cluster-id", b.ClusterKey(), "--max-age", "1ms", "gs://backups/etcd"}, exitcode.Stale, b.Timestamp},
		{"none", []string{"--latest", "--max-age", "26h", "gs://empty/etcd"}, exitcode.Stale, "no complete backup"},
		{"none of that cluster", []string{"--latest", "--cluster-id", "other", "--max-age", "26h", "gs://backups/etcd"}, exitcode.Stale, "no complete backup of cluster other at gs://backups/etcd, which holds backups of " + b.ClusterKey() + " only"},
		{"none, and no --max-age", []string{"--latest", "gs://empty/etcd"}, exitcode.Failure, "no complete backup"},
		{"local, too old", []string{"--max-age", "1ms", dir}, exitcode.Stale, "more than --max-age"},
		{"local, no --max-age", []string{dir}, exitcode.OK, "backup verified"},
		{"negative", []string{"--max-age", "-1h", dir}, exitcode.Usage, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := cli(t, env, append([]string{"verify"}, tt.args...)...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", code, tt.code, tt.want, stderr)
			}
		})
	}
}

// TestMetricsPushFailureIsAWarning: a Pushgateway that is down leaves the
// exit code alone and costs one warning.
func TestMetricsPushFailureIsAWarning(t *testing.T) {
	dir, _ := savedBackup(t, 20)
	down := "http://" + gcstest.DeadHost(t)
	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"verify", dir}, exitcode.OK},
		{[]string{"verify", filepath.Join(dir, "none")}, exitcode.Usage},
	} {
		code, _, stderr := cli(t, nil, append(tt.args, "--metrics-push-url", down)...)
		if code != tt.code || strings.Count(stderr, "metrics not pushed") != 1 || !strings.Contains(stderr, "connection refused") {
			t.Errorf("%v: exit %d, want %d and one warning:\n%s", tt.args, code, tt.code, stderr)
		}
	}
}

func TestHelpExitCodes(t *testing.T) {
	if _, stdout, _ := cli(t, nil, "--help"); !strings.Contains(stdout, "5 no good backup recent enough") {
		t.Errorf("--help does not document exit code 5:\n%s", stdout)
	}
}

func TestMetricsPushURLUsage(t *testing.T) {
	const secret = "hunter2"
	for _, u := range []string{"127.0.0.1:9091", "ftp://u:" + secret + "@h", "http://u:" + secret + "@h:x"} {
		code, _, stderr := cli(t, nil, "verify", "--metrics-push-url", u, t.TempDir())
		if code != exitcode.Usage || !strings.Contains(stderr, "--metrics-push-url") || strings.Contains(stderr, secret) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("--metrics-push-url %q: exit %d, want %d with one line and no password:\n%s", u, code, exitcode.Usage, stderr)
		}
	}
}
