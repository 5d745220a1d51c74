package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
)

// TestGCSCommands drives upload, list, download, verify and prune against
// an emulator with a backup of a real member, as a pipeline and an operator
// would.
func TestGCSCommands(t *testing.T) {
	dir, b := savedBackup(t, 200)
	snap := b.File(manifest.KindSnapshot)
	srv := gcstest.New(t, "backups", "keys")
	env := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host()}
	// The backup's directory: its timestamp and its snapshot's digest.
	bdir := b.Timestamp + "-" + snap.SHA256[:12]
	backupURL := "gs://backups/etcd/" + b.ClusterKey() + "/" + bdir

	t.Run("upload", func(t *testing.T) {
		results := t.TempDir()
		// DEST from the environment, as the Task passes it.
		uenv := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host(), "ETCD_BACKUP_DEST": "gs://backups/etcd"}
		code, _, stderr := cli(t, uenv, "upload", "--results-dir", results, "--resources-to", "gs://keys/etcd", "--keep-last", "3", dir)
		if code != 0 {
			t.Fatalf("upload: exit %d\n%s", code, stderr)
		}
		want := map[string]string{
			"snapshot-uri":  backupURL + "/" + snap.Name,
			"resources-uri": "gs://keys/etcd/" + b.ClusterKey() + "/" + bdir + "/" + b.File(manifest.KindResources).Name,
			"manifest-uri":  backupURL + "/backup.json",
		}
		for name, value := range want {
			if got := readResult(t, results, name); got != value {
				t.Errorf("result %s = %q, want %q", name, got, value)
			}
		}
		var art map[string]string
		raw := readResult(t, results, "backup-ARTIFACT_OUTPUTS")
		if err := json.Unmarshal([]byte(raw), &art); err != nil || strings.HasSuffix(raw, "\n") {
			t.Fatalf("backup-ARTIFACT_OUTPUTS %q: %v", raw, err)
		}
		if art["uri"] != want["manifest-uri"] || art["digest"] != "sha256:"+snap.SHA256 || art["isBuildArtifact"] != "true" || len(art) != 3 {
			t.Errorf("backup-ARTIFACT_OUTPUTS = %v", art)
		}
		if !strings.Contains(stderr, "retention: keep "+backupURL) {
			t.Errorf("no retention line in:\n%s", stderr)
		}
		// Again: nothing is sent, and it succeeds.
		if code, _, stderr := cli(t, uenv, "upload", "--resources-to", "gs://keys/etcd", dir); code != 0 || !strings.Contains(stderr, "already uploaded") {
			t.Errorf("second upload: exit %d\n%s", code, stderr)
		}
	})

	t.Run("list", func(t *testing.T) {
		// An interrupted upload beside it.
		srv.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: "backups", Name: "etcd/" + b.ClusterKey() + "/2099-01-01_000000/snapshot_2099-01-01_000000.db"}, Content: []byte("x")})
		code, stdout, stderr := cli(t, env, "list", "gs://backups/etcd")
		if code != 0 {
			t.Fatalf("list: exit %d\n%s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIMESTAMP") {
			t.Fatalf("list:\n%s", stdout)
		}
		for _, want := range []string{b.Timestamp, b.Cluster.Version, " complete ", backupURL} {
			if !strings.Contains(lines[2], want) {
				t.Errorf("list row %q lacks %q", lines[2], want)
			}
		}
		if !strings.Contains(lines[1], "2099-01-01_000000") || !strings.Contains(lines[1], " incomplete ") {
			t.Errorf("incomplete backup row: %q", lines[1])
		}
		// Nothing found: what it looked for, and what is there instead.
		for _, tt := range []struct {
			args []string
			want string
		}{
			{[]string{"list", "gs://backups/etcd/" + b.ClusterKey()}, "give the prefix above it, gs://backups/etcd"},
			{[]string{"list", "gs://backups"}, "give the prefix gs://backups/etcd"},
			{[]string{"list", "--cluster-id", "other", "gs://backups/etcd"}, "no backups of cluster other at gs://backups/etcd: there are backups of " + b.ClusterKey()},
		} {
			if code, _, stderr := cli(t, env, tt.args...); code != 0 || !strings.Contains(stderr, tt.want) {
				t.Errorf("%v: exit %d, want %q:\n%s", tt.args, code, tt.want, stderr)
			}
		}
		code, stdout, _ = cli(t, env, "list", "--output", "json", "gs://backups/etcd")
		var rows []listed
		if err := json.Unmarshal([]byte(stdout), &rows); code != 0 || err != nil || len(rows) != 2 {
			t.Fatalf("list --output json: exit %d, %v:\n%s", code, err, stdout)
		}
		if r := rows[1]; !r.Complete || r.State != "complete" || r.EtcdRevision != b.Etcd.Revision || r.Size != b.Size() || r.Backup != backupURL || r.Digest != "" {
			t.Errorf("json row = %+v", r)
		}
		if r := rows[0]; r.Complete || r.State != "incomplete" || r.Problem == "" {
			t.Errorf("incomplete json row = %+v", r)
		}
	})

	t.Run("download and verify", func(t *testing.T) {
		for _, args := range [][]string{{backupURL}, {"--latest", "gs://backups/etcd"}} {
			out := filepath.Join(t.TempDir(), "restore")
			code, _, stderr := cli(t, env, append(append([]string{"download"}, args...), out)...)
			if code != 0 {
				t.Fatalf("download %v: exit %d\n%s", args, code, stderr)
			}
			if !strings.Contains(stderr, "cluster-restore.sh "+out) {
				t.Errorf("download does not say how to restore:\n%s", stderr)
			}
			if code, _, stderr := cli(t, nil, "verify", out); code != 0 {
				t.Errorf("verify of the download: exit %d\n%s", code, stderr)
			}
			if got, want := dirNames(t, out), dirNames(t, dir); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("download holds %v, the backup %v", got, want)
			}
		}
		if code, _, stderr := cli(t, env, "verify", backupURL); code != 0 {
			t.Errorf("verify %s: exit %d\n%s", backupURL, code, stderr)
		}
		if code, _, stderr := cli(t, env, "verify", "--restore", "--scratch-dir", t.TempDir(), backupURL); code != 0 {
			t.Errorf("verify --restore %s: exit %d\n%s", backupURL, code, stderr)
		}
		if code, _, stderr := cli(t, env, "verify", "--latest", "gs://backups/etcd"); code != 0 || !strings.Contains(stderr, backupURL) {
			t.Errorf("verify --latest: exit %d, want the newest backup %s verified:\n%s", code, backupURL, stderr)
		}
	})

	t.Run("prune", func(t *testing.T) {
		code, stdout, stderr := cli(t, env, "prune", "--keep-last", "1", "--dry-run", "gs://backups/etcd")
		if code != 0 {
			t.Fatalf("prune: exit %d\n%s", code, stderr)
		}
		if !regexp.MustCompile(`(?m)^keep +` + regexp.QuoteMeta(backupURL) + ` +newest complete backup$`).MatchString(stdout) {
			t.Errorf("prune output:\n%s", stdout)
		}
		code, _, stderr = cli(t, env, "prune", "--keep-last", "1", "--cluster-id", "other", "gs://backups/etcd")
		if code != 0 || !strings.Contains(stderr, "no backups of cluster other at gs://backups/etcd, so nothing is pruned") {
			t.Errorf("prune of a cluster with no backups there: exit %d, want 0 with a warning:\n%s", code, stderr)
		}
	})

	t.Run("corrupt object", func(t *testing.T) {
		name := "etcd/" + b.ClusterKey() + "/" + bdir + "/" + snap.Name
		obj, err := srv.GetObject("backups", name)
		if err != nil {
			t.Fatal(err)
		}
		obj.Content[len(obj.Content)/2] ^= 1
		obj.Crc32c, obj.Md5Hash = "", ""
		srv.CreateObject(obj)
		code, _, stderr := cli(t, env, "verify", backupURL)
		if code != exitcode.Verify || !strings.Contains(stderr, "SHA-256") {
			t.Errorf("verify of a corrupt backup: exit %d\n%s", code, stderr)
		}
		out := filepath.Join(t.TempDir(), "restore")
		if code, _, stderr := cli(t, env, "download", backupURL, out); code != exitcode.Verify {
			t.Errorf("download of a corrupt backup: exit %d\n%s", code, stderr)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("download left %v", dirNames(t, out))
		}
		// Other bytes of the same size: corrupt, by the CRC32C the service
		// reports, without reading the content.
		code, stdout, stderr := cli(t, env, "list", "gs://backups/etcd")
		if code != 0 || !regexp.MustCompile(` corrupt +`+regexp.QuoteMeta(backupURL)).MatchString(stdout) || !strings.Contains(stderr, "CRC32C") {
			t.Errorf("list: exit %d, want %s corrupt by its CRC32C:\n%s\n%s", code, backupURL, stdout, stderr)
		}
		code, stdout, stderr = cli(t, env, "prune", "--keep-last", "1", "gs://backups/etcd")
		if code != 0 || !regexp.MustCompile(`(?m)^keep +`+regexp.QuoteMeta(backupURL)+` +corrupt \(`).MatchString(stdout) {
			t.Errorf("prune: exit %d, want the corrupt backup kept:\n%s\n%s", code, stdout, stderr)
		}
		code, _, stderr = cli(t, env, "download", "--latest", "gs://backups/etcd", filepath.Join(t.TempDir(), "latest"))
		if code == 0 || !strings.Contains(stderr, "skipping "+backupURL+", which is corrupt") {
			t.Errorf("download --latest: exit %d, want it to skip %s as corrupt:\n%s", code, backupURL, stderr)
		}
	})
}

// TestGCSStalledService checks that --timeout ends an upload to a service
// that stopped answering, and that nothing of it is left.
func TestGCSStalledService(t *testing.T) {
	dir, _ := savedBackup(t, 200)
	srv := gcstest.New(t, "backups")
	proxy := gcstest.NewProxy(t, srv)
	proxy.Add(gcstest.Fault{Match: gcstest.IsUploadData, Do: gcstest.Stall(nil)})
	env := map[string]string{"STORAGE_EMULATOR_HOST": proxy.Host()}
	code, _, stderr := cli(t, env, "upload", "--timeout", "2s", dir, "gs://backups/etcd")
	if code != exitcode.Failure || !strings.Contains(stderr, "--timeout 2s reached") {
		t.Errorf("exit %d:\n%s", code, stderr)
	}
	if objs, _ := srv.Objects("backups"); len(objs) != 0 {
		t.Errorf("%d objects left", len(objs))
	}
}

// TestGCSUploadSIGTERM sends SIGTERM, as a Tekton or Argo deadline does, in
// the middle of the snapshot's upload: the process exits non-zero and leaves
// no object of it, and no backup.json.
func TestGCSUploadSIGTERM(t *testing.T) {
	dir, b := savedBackup(t, 200)
	snap := b.File(manifest.KindSnapshot).Name
	srv := gcstest.New(t, "backups")
	proxy := gcstest.NewProxy(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := selfCommand(ctx, "upload", dir, "gs://backups/etcd")
	cmd.Env = append(cmd.Env, "STORAGE_EMULATOR_HOST="+proxy.Host())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Handed over, not read from cmd: the proxy runs in its own goroutine.
	started := make(chan *os.Process, 1)
	proxy.Add(gcstest.Fault{
		Match: func(r *http.Request) bool { return gcstest.IsUpload(r) && strings.Contains(r.URL.RawQuery, snap) },
		Do:    gcstest.Stall(func() { (<-started).Signal(syscall.SIGTERM) }),
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started <- cmd.Process
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitcode.Failure || !strings.Contains(stderr.String(), "interrupted by terminated") {
		t.Fatalf("after SIGTERM: %v, want exit %d:\n%s", err, exitcode.Failure, stderr.String())
	}
	attrs, err := srv.Objects("backups")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range attrs {
		if strings.HasSuffix(a.Name, snap) || strings.HasSuffix(a.Name, manifest.FileName) {
			t.Errorf("%s stored", a.Name)
		}
	}
}

func readResult(t *testing.T, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestGCSUsage(t *testing.T) {
	srv := gcstest.New(t, "backups")
	env := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host()}
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"upload to a path", []string{"upload", dir, "/mnt/backups"}, "is not a destination this program knows"},
		{"upload without DEST", []string{"upload", dir}, "missing DEST"},
		{"bad bucket", []string{"upload", dir, "gs://Bad_Bucket/x"}, "not a valid bucket name"},
		{"bad resources-to", []string{"upload", "--resources-to", "gs://b/../x", dir, "gs://backups/p"}, "--resources-to"},
		{"bad kms key", []string{"upload", "--kms-key", "my-key", dir, "gs://backups/p"}, "--kms-key"},
		{"negative keep-last", []string{"upload", "--keep-last", "-1", dir, "gs://backups/p"}, "negative"},
		{"zero stall timeout", []string{"upload", "--stall-timeout", "0s", dir, "gs://backups/p"}, "--stall-timeout must be positive"},
		{"zero download stall timeout", []string{"download", "--stall-timeout", "0s", "gs://backups/p/x/2026-01-01_000000", dir}, "--stall-timeout must be positive"},
		{"zero list stall timeout", []string{"list", "--stall-timeout", "0s", "gs://backups/p"}, "--stall-timeout must be positive"},
		{"zero verify stall timeout", []string{"verify", "--stall-timeout", "0s", "gs://backups/p/x/2026-01-01_000000"}, "--stall-timeout must be positive"},
		{"zero prune stall timeout", []string{"prune", "--keep-last", "1", "--stall-timeout", "0s", "gs://backups/p"}, "--stall-timeout must be positive"},
		{"prune without policy", []string{"prune", "gs://backups/p"}, "no retention policy"},
		{"prune --keep-last 0", []string{"prune", "--keep-last", "0", "gs://backups/p"}, "--keep-last 0 sets no rule, so prune has nothing to apply: give --keep-last N of 1 or more"},
		{"prune with both 0", []string{"prune", "--keep-last", "0", "--keep-within", "0s", "gs://backups/p"}, "--keep-last 0 and --keep-within 0 set no rule"},
		{"list as xml", []string{"list", "--output", "xml", "gs://backups/p"}, "--output"},
		{"download a prefix", []string{"download", "gs://backups/p", dir}, "does not name one backup"},
		{"cluster-id without latest", []string{"download", "--cluster-id", "x", "gs://backups/p/x/2026-01-01_000000", dir}, "--latest"},
		{"verify a bad URL", []string{"verify", "gs://backups/p"}, "does not name one backup"},
		{"verify --latest of a directory", []string{"verify", "--latest", dir}, "destination TARGET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := cli(t, env, tt.args...)
			if code != exitcode.Usage || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, want %d with one line containing %q:\n%s", code, exitcode.Usage, tt.want, stderr)
			}
		})
	}
	// Not a backup: refused before anything is sent.
	if code, _, stderr := cli(t, env, "upload", dir, "gs://backups/p"); code != exitcode.Verify || !strings.Contains(stderr, "refusing to upload") {
		t.Errorf("upload of an empty directory: exit %d:\n%s", code, stderr)
	}
	if objs, _ := srv.Objects("backups"); len(objs) != 0 {
		t.Errorf("refused commands wrote %d objects", len(objs))
	}
}

func TestGCSSkipWithoutDest(t *testing.T) {
	results := t.TempDir()
	code, _, stderr := cli(t, nil, "upload", "--skip-if-no-dest", "--results-dir", results, t.TempDir())
	if code != 0 || !strings.Contains(stderr, "no destination given; skipping upload") {
		t.Errorf("exit %d:\n%s", code, stderr)
	}
	// A Pipeline that returns an upload result fails when the Task did not
	// write it: every result exists, empty, and the artifact is no build
	// output.
	want := map[string]string{
		"snapshot-uri":            "",
		"resources-uri":           "",
		"manifest-uri":            "",
		"IMAGE_URL":               "",
		"IMAGE_DIGEST":            "",
		"backup-ARTIFACT_OUTPUTS": `{"uri":"","digest":"","isBuildArtifact":"false"}`,
	}
	for _, name := range dirNames(t, results) {
		b, err := os.ReadFile(filepath.Join(results, name))
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := want[name]; !ok || v != string(b) {
			t.Errorf("result %s = %q, want %q", name, b, v)
		}
		delete(want, name)
	}
	if len(want) > 0 {
		t.Errorf("results not written: %v", want)
	}
}

func TestGCSCredentialsFile(t *testing.T) {
	for _, file := range []string{filepath.Join(t.TempDir(), "missing.json"), t.TempDir()} {
		code, _, stderr := cli(t, map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": file}, "list", "gs://backups/etcd")
		if code != exitcode.Usage || !strings.Contains(stderr, "GOOGLE_APPLICATION_CREDENTIALS names no credentials file") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("GOOGLE_APPLICATION_CREDENTIALS=%s: exit %d, want %d and one line saying it names no credentials file:\n%s", file, code, exitcode.Usage, stderr)
		}
	}
}

func TestGCSEmulatorDown(t *testing.T) {
	host := gcstest.DeadHost(t)
	code, _, stderr := cli(t, map[string]string{"STORAGE_EMULATOR_HOST": host}, "list", "--timeout", "2s", "gs://backups/etcd")
	if code != exitcode.Failure || !strings.Contains(stderr, "connection refused") || !strings.Contains(stderr, "--timeout 2s reached") {
		t.Errorf("exit %d:\n%s", code, stderr)
	}
}

// TestGCSNoBucket checks that a bucket that does not exist is named, with
// exit 2, before anything is sent: retrying cannot help.
func TestGCSNoBucket(t *testing.T) {
	dir, b := savedBackup(t, 10)
	srv := gcstest.New(t, "backups")
	env := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host()}
	for _, args := range [][]string{
		{"upload", dir, "gs://missing/etcd"},
		{"upload", "--resources-to", "gs://missing/keys", dir, "gs://backups/etcd"},
		{"list", "gs://missing/etcd"},
		{"download", "gs://missing/etcd/" + b.ClusterKey() + "/" + b.Timestamp, filepath.Join(t.TempDir(), "out")},
		{"download", "--latest", "gs://missing/etcd", filepath.Join(t.TempDir(), "out")},
		{"verify", "gs://missing/etcd/" + b.ClusterKey() + "/" + b.Timestamp},
		{"prune", "--keep-last", "1", "gs://missing/etcd"},
	} {
		code, _, stderr := cli(t, env, args...)
		if code != exitcode.Usage || !strings.Contains(stderr, "gs://missing: bucket does not exist") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, want %d and one line naming the missing bucket:\n%s", args, code, exitcode.Usage, stderr)
		}
	}
	if objs, _ := srv.Objects("backups"); len(objs) != 0 {
		t.Errorf("%d objects sent", len(objs))
	}
}

// TestGCSNoSuchBackup checks that a mistyped backup URL is exit 2, naming
// the nearest backups, not exit 4 (a backup that is not usable).
func TestGCSNoSuchBackup(t *testing.T) {
	dir, b := savedBackup(t, 10)
	srv := gcstest.New(t, "backups")
	env := map[string]string{"STORAGE_EMULATOR_HOST": srv.Host()}
	if code, _, stderr := cli(t, env, "upload", dir, "gs://backups/etcd"); code != 0 {
		t.Fatalf("upload: exit %d\n%s", code, stderr)
	}
	backups := "gs://backups/etcd/" + b.ClusterKey() + "/"
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"download", backups + "2001-01-01_000000", filepath.Join(t.TempDir(), "out")}, "the nearest are " + backups + b.Timestamp},
		{[]string{"verify", backups + "2001-01-01_000000"}, "the nearest are " + backups + b.Timestamp},
		{[]string{"verify", "gs://backups/etcd/other-cluster/" + b.Timestamp}, "there is no backup of cluster other-cluster below gs://backups/etcd"},
	}
	for _, tt := range tests {
		code, _, stderr := cli(t, env, tt.args...)
		if code != exitcode.Usage || !strings.Contains(stderr, "no such backup") || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", tt.args, code, exitcode.Usage, tt.want, stderr)
		}
	}
}
