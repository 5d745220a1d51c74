package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// master is a running member with its host tree, and how to call save on it
// with no configuration but the node name, as the Task does.
type master struct {
	*testcluster.Cluster
	env map[string]string
}

func newMaster(t *testing.T, opts testcluster.Options) *master {
	c := testcluster.New(t, opts)
	return &master{Cluster: c, env: map[string]string{"NODE_NAME": c.NodeName}}
}

func (m *master) save(t *testing.T, dir string, flags ...string) (int, string) {
	t.Helper()
	args := append([]string{"save", "--host-root", m.HostRoot}, flags...)
	code, _, stderr := cli(t, m.env, append(args, dir)...)
	return code, stderr
}

// savedBackup takes one backup of a new master with keys filler keys into
// a new directory.
func savedBackup(t *testing.T, keys int) (string, *manifest.Backup) {
	t.Helper()
	m := newMaster(t, testcluster.Options{Keys: keys})
	dir := t.TempDir()
	if code, stderr := m.save(t, dir); code != 0 {
		t.Fatalf("save: exit %d\n%s", code, stderr)
	}
	return dir, readManifest(t, dir)
}

func readManifest(t *testing.T, dir string) *manifest.Backup {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := manifest.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestSaveZeroConfig(t *testing.T) {
	m := newMaster(t, testcluster.Options{Keys: 300})
	dir := filepath.Join(t.TempDir(), "new", "backup") // parents are created, as the script does
	results := t.TempDir()
	code, stderr := m.save(t, dir, "--results-dir", results)
	if code != 0 {
		t.Fatalf("save exit %d:\n%s", code, stderr)
	}
	b := readManifest(t, dir)
	ts := b.Timestamp
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\d_\d{6}$`).MatchString(ts) {
		t.Errorf("timestamp %q", ts)
	}
	want := []string{manifest.FileName, manifest.SnapshotName(ts, false), manifest.ResourcesName(ts, false)}
	slices.Sort(want)
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Errorf("backup dir holds %v, want %v", got, want)
	}
	for _, name := range want {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}

	// The manifest describes this member and this cluster.
	switch {
	case b.Etcd.Endpoint != m.Endpoint:
		t.Errorf("snapshot taken from %s, want the local member %s", b.Etcd.Endpoint, m.Endpoint)
	case b.Cluster.ID != m.ClusterID || b.Cluster.Version != testcluster.DefaultVersion || b.Cluster.Platform != "openshift":
		t.Errorf("cluster %+v", b.Cluster)
	case b.Dirty || len(b.SkippedChecks) != 0:
		t.Errorf("clean backup marked dirty %v or with skipped checks %v", b.Dirty, b.SkippedChecks)
	case b.Etcd.KeyCount < 300 || b.Etcd.Revision <= 0 || b.Etcd.MemberName == "" || b.Etcd.ServerVersion == "":
		t.Errorf("etcd %+v", b.Etcd)
	case !b.EncryptionConfigArchived:
		t.Error("encryption config not recorded as archived")
	case b.EarliestCertExpiry == nil || b.EarliestCertExpiry.Path != m.EarliestCertPath ||
		!b.EarliestCertExpiry.NotAfter.Equal(m.EarliestCertNotAfter.Truncate(time.Second)):
		t.Errorf("earliest cert %+v, want %s at %s", b.EarliestCertExpiry, m.EarliestCertPath, m.EarliestCertNotAfter)
	}
	for _, p := range b.StaticPods {
		if m.Revisions[p.Component] != p.Revision {
			t.Errorf("%s revision %d, running is %d", p.Component, p.Revision, m.Revisions[p.Component])
		}
	}
	if len(b.StaticPods) != 4 {
		t.Errorf("static pods %v", b.StaticPods)
	}

	// Console lines keep the script's vocabulary.
	for _, line := range []string{
		"found latest kube-apiserver-pod: /etc/kubernetes/static-pod-resources/kube-apiserver-pod-",
		"Snapshot saved at " + filepath.Join(dir, manifest.SnapshotName(ts, false)),
		"snapshot db and kube resources are successfully saved to " + dir,
	} {
		if !strings.Contains(stderr, line) {
			t.Errorf("output lacks %q:\n%s", line, stderr)
		}
	}

	// Results: every one written, verbatim.
	snap := b.File(manifest.KindSnapshot)
	wantResults := map[string]string{
		"backup-dir":      dir,
		"snapshot-path":   filepath.Join(dir, snap.Name),
		"resources-path":  filepath.Join(dir, b.File(manifest.KindResources).Name),
		"snapshot-sha256": snap.SHA256,
		"cluster-version": testcluster.DefaultVersion,
		"timestamp":       ts,
		"dirty":           "false",
	}
	if got := dirNames(t, results); len(got) != 9 {
		t.Errorf("results %v, want 9", got)
	}
	for name, want := range wantResults {
		got, err := os.ReadFile(filepath.Join(results, name))
		if err != nil || string(got) != want {
			t.Errorf("result %s = %q (%v), want %q", name, got, err, want)
		}
	}

	if code, _, stderr := cli(t, nil, "verify", "--restore", dir); code != 0 {
		t.Errorf("verify --restore of a fresh backup: exit %d\n%s", code, stderr)
	}
	extractAsRestore(t, m, dir, b)
}

// extractAsRestore unpacks the archive exactly as cluster-restore.sh does
// and compares it with the host's running revision directories.
func extractAsRestore(t *testing.T, m *master, dir string, b *manifest.Backup) {
	t.Helper()
	out := t.TempDir()
	tarball := filepath.Join(dir, b.File(manifest.KindResources).Name)
	if msg, err := exec.Command("tar", "-C", out, "-xzf", tarball, "static-pod-resources").CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v\n%s", err, msg)
	}
	kube := filepath.Join(m.HostRoot, "etc", "kubernetes")
	var want []string
	for _, p := range b.StaticPods {
		want = append(want, treeOf(t, kube, filepath.Join("static-pod-resources", p.Component+"-pod-"+strconv.Itoa(p.Revision)))...)
	}
	got := treeOf(t, out, "static-pod-resources")
	slices.Sort(want)
	if !slices.Equal(got[1:], want) { // got[0] is static-pod-resources itself
		t.Errorf("extracted tree differs from the host:\n got %v\nwant %v", got, want)
	}
}

// treeOf lists rel under root as "path mode [-> target | sha]" lines.
func treeOf(t *testing.T, root, rel string) []string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(filepath.Join(root, rel), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(root, path)
		line := r + " " + fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			line += " -> " + target
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(path)
			line += " " + string(bytes.TrimSpace(data[:min(len(data), 32)]))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestSavePreflight(t *testing.T) {
	tests := []struct {
		name   string
		opts   testcluster.Options
		break_ func(t *testing.T, m *master)
		want   string
		// forcedCode is the exit status with --force: 0 where the backup can
		// still be taken, 1 where something it needs is missing.
		forcedCode int
	}{
		{name: "operator progressing", opts: testcluster.Options{Progressing: []string{"kube-apiserver"}}, want: "ClusterOperator kube-apiserver is progressing"},
		{name: "mid-upgrade", opts: testcluster.Options{Upgrading: true}, want: "cluster is mid-upgrade"},
		{name: "young cluster", opts: testcluster.Options{ClusterAge: time.Hour}, want: "younger than 24h0m0s"},
		{name: "alarm", break_: func(t *testing.T, m *master) {
			if err := m.RaiseAlarm(t.Context()); err != nil {
				t.Fatal(err)
			}
		}, want: "active alarms NOSPACE"},
		{name: "running revision missing", break_: func(t *testing.T, m *master) {
			dir := filepath.Join(m.HostRoot, "etc/kubernetes/static-pod-resources", "kube-scheduler-pod-"+strconv.Itoa(m.Revisions["kube-scheduler"]))
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}, want: "kube-scheduler-pod-", forcedCode: exitcode.Failure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMaster(t, tt.opts)
			if tt.break_ != nil {
				tt.break_(t, m)
			}
			dir := t.TempDir()
			code, stderr := m.save(t, dir)
			if code != exitcode.Preflight || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "--force") {
				t.Fatalf("exit %d, want %d with %q and how to override:\n%s", code, exitcode.Preflight, tt.want, stderr)
			}
			if got := dirNames(t, dir); len(got) != 0 {
				t.Fatalf("refused save left %v", got)
			}
			code, stderr = m.save(t, dir, "--force")
			if code != tt.forcedCode {
				t.Fatalf("--force: exit %d, want %d:\n%s", code, tt.forcedCode, stderr)
			}
			if code != 0 {
				if got := dirNames(t, dir); len(got) != 0 {
					t.Errorf("failed save left %v", got)
				}
				return
			}
			b := readManifest(t, dir)
			if !b.Dirty || len(b.SkippedChecks) == 0 || !strings.Contains(b.File(manifest.KindSnapshot).Name, manifest.DirtySuffix) {
				t.Errorf("forced backup not marked dirty: %+v", b.Files)
			}
			if code, _, stderr := cli(t, nil, "verify", dir); code != 0 {
				t.Errorf("verify of a forced backup: exit %d\n%s", code, stderr)
			}
		})
	}
}

func TestSaveUsage(t *testing.T) {
	m := newMaster(t, testcluster.Options{})
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	holding := t.TempDir()
	if err := os.WriteFile(filepath.Join(holding, "snapshot_2026-01-01_000000.db"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	leftover := t.TempDir()
	leftoverPart := filepath.Join(leftover, "snapshot_2026-01-01_000000.db.part")
	if err := os.WriteFile(leftoverPart, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	// unused must stay empty: outputs are checked before the backup is taken.
	unused := t.TempDir()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown command", nil, []string{"backup"}, "unknown command"},
		{"unknown flag", m.env, []string{"save", "--frobnicate", t.TempDir()}, "unknown flag"},
		{"bad duration", m.env, []string{"save", "--timeout", "soon", t.TempDir()}, "invalid argument"},
		{"bad env value", map[string]string{"ETCD_BACKUP_FORCE": "maybe"}, []string{"save", t.TempDir()}, "$ETCD_BACKUP_FORCE"},
		{"no DIR", m.env, []string{"save"}, "missing DIR"},
		{"two DIRs", m.env, []string{"save", "a", "b"}, "too many arguments"},
		{"wait longer than timeout", m.env, []string{"save", "--wait-for-version", "4.19.0", "--wait-timeout", "2h", "--timeout", "1h", t.TempDir()}, "shorter than --timeout"},
		{"bad log format", m.env, []string{"save", "--log-format", "xml", t.TempDir()}, "log format"},
		{"several members", m.env, []string{"save", "--host-root", m.HostRoot, "--endpoints", "https://a:2379,https://b:2379", t.TempDir()}, "exactly one"},
		{"no etcd.env", m.env, []string{"save", "--host-root", t.TempDir(), t.TempDir()}, "--endpoints"},
		{"no node name", nil, []string{"save", "--host-root", m.HostRoot, t.TempDir()}, "NODE_NAME"},
		{"DIR is a file", m.env, []string{"save", "--host-root", m.HostRoot, file}, "is a file"},
		{"DIR holds a backup", m.env, []string{"save", "--host-root", m.HostRoot, holding}, "already holds"},
		{"DIR holds a leftover", m.env, []string{"save", "--host-root", m.HostRoot, leftover}, "holds a leftover of an interrupted run, which is not a backup: remove it with: rm -- '" + leftoverPart + "'"},
		{"no results dir", m.env, []string{"save", "--host-root", m.HostRoot, "--results-dir", filepath.Join(t.TempDir(), "missing"), unused}, "does not exist"},
		{"results dir is a file", m.env, []string{"save", "--host-root", m.HostRoot, "--results-dir", file, unused}, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := cli(t, tt.env, tt.args...)
			if code != exitcode.Usage || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, exitcode.Usage, tt.want, stderr)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
				t.Errorf("usage error is %d lines, want one:\n%s", n+1, stderr)
			}
		})
	}
	if got, _ := os.ReadFile(filepath.Join(holding, "snapshot_2026-01-01_000000.db")); string(got) != "old" {
		t.Error("an existing backup was touched")
	}
	if got, _ := os.ReadFile(leftoverPart); string(got) != "half" {
		t.Error("a leftover was touched")
	}
	if got := dirNames(t, unused); len(got) != 0 {
		t.Errorf("a save refused for its outputs left %v", got)
	}
}

func TestSaveEnvFallback(t *testing.T) {
	m := newMaster(t, testcluster.Options{})
	dir := t.TempDir()
	env := map[string]string{
		"NODE_NAME":                   m.NodeName,
		"ETCD_BACKUP_HOST_ROOT":       m.HostRoot,
		"ETCD_BACKUP_DIR":             dir,
		"ETCDCTL_ENDPOINTS":           m.Endpoint,
		"ETCDCTL_CACERT":              m.CACert,
		"ETCDCTL_CERT":                m.Cert,
		"ETCDCTL_KEY":                 m.Key,
		"ETCD_BACKUP_MIN_CLUSTER_AGE": "1h",
	}
	if code, _, stderr := cli(t, env, "save"); code != 0 {
		t.Fatalf("save from environment alone: exit %d\n%s", code, stderr)
	}
	// A flag wins over the environment: this one makes the check refuse.
	if code, _, stderr := cli(t, env, "save", "--min-cluster-age", "1000h", t.TempDir()); code != exitcode.Preflight {
		t.Fatalf("flag did not win over environment: exit %d\n%s", code, stderr)
	}
}

func TestSaveUnreachable(t *testing.T) {
	m := newMaster(t, testcluster.Options{})
	tests := []struct {
		name  string
		flags []string
		code  int
		want  string
	}{
		{"dead endpoint", []string{"--endpoints", "https://" + m.IP + ":1"}, exitcode.Preflight, "is etcd running"},
		{"dead endpoint forced", []string{"--force", "--endpoints", "https://" + m.IP + ":1"}, exitcode.Failure, "is etcd running"},
		{"plain http", []string{"--endpoints", "http://" + m.IP + ":2379"}, exitcode.Usage, "not https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			code, stderr := m.save(t, dir, append(tt.flags, "--request-timeout", "2s")...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tt.code, tt.want, stderr)
			}
			// Only a member that answers can tell whether the cluster is
			// OpenShift, and no flag makes a backup of one that does not.
			for _, wrong := range []string{"not an OpenShift", "pass --force"} {
				if strings.Contains(stderr, wrong) {
					t.Errorf("an unreachable member reported with %q:\n%s", wrong, stderr)
				}
			}
			if got := dirNames(t, dir); len(got) != 0 {
				t.Errorf("failed save left %v", got)
			}
		})
	}
}

// dialled counts the connections the proxy accepted.
func (p *stallProxy) dialled() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

// TestSaveClientCertificates: credentials that cannot work are a
// configuration error (exit 2) named in one line with the file at fault, found
// before etcd is dialled where this node can tell, and otherwise from the
// TLS alert the member sends, never as "is etcd running?" after the request
// deadline, and never with --force as the way out.
func TestSaveClientCertificates(t *testing.T) {
	m := newMaster(t, testcluster.Options{})
	certs := t.TempDir()
	now := time.Now().Truncate(time.Second)
	issue := func(spec testcluster.ClientCert) testcluster.ClientCertFiles {
		f, err := m.IssueClientCert(certs, spec)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	expiredAt := now.Add(-24 * time.Hour)
	expired := issue(testcluster.ClientCert{Name: "expired", NotBefore: now.Add(-48 * time.Hour), NotAfter: expiredAt})
	validFrom := now.Add(24 * time.Hour)
	future := issue(testcluster.ClientCert{Name: "future", NotBefore: validFrom, NotAfter: now.Add(48 * time.Hour)})
	foreign := issue(testcluster.ClientCert{Name: "foreign", ForeignCA: "other-signer"})
	other := issue(testcluster.ClientCert{Name: "other"})
	// A bundle that vouches for the foreign client certificate and for the
	// member, which itself trusts only its own CA for clients.
	both := filepath.Join(certs, "both-ca.crt")
	if err := os.WriteFile(both, slices.Concat(readFile(t, m.CACert), readFile(t, foreign.CA)), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name              string
		cacert, cert, key string
		want              []string
		dialled           bool
	}{
		{"expired", m.CACert, expired.Cert, expired.Key,
			[]string{"client certificate " + expired.Cert + " expired on " + expiredAt.UTC().Format(time.RFC3339)}, false},
		{"not yet valid", m.CACert, future.Cert, future.Key,
			[]string{"client certificate " + future.Cert + " is not valid until " + validFrom.UTC().Format(time.RFC3339), "clock"}, false},
		{"other CA", m.CACert, foreign.Cert, foreign.Key,
			[]string{"client certificate " + foreign.Cert, `issued by "CN=other-signer`, "does not chain to the CA in " + m.CACert + " (CN=etcd-signer"}, false},
		{"key of another certificate", m.CACert, m.Cert, other.Key,
			[]string{"client key " + other.Key + " does not belong to client certificate " + m.Cert}, false},
		{"member trusts another client CA", both, foreign.Cert, foreign.Key,
			[]string{"refused client certificate " + foreign.Cert + ": remote error: tls: ", "does not trust the CA that issued it"}, true},
		{"member not vouched for", foreign.CA, foreign.Cert, foreign.Key,
			[]string{"presents a serving certificate that the CA bundle " + foreign.CA + " does not vouch for", "x509: certificate signed by unknown authority"}, true},
		// A leaf given as the bundle vouches for itself, not for the member.
		{"client certificate as CA bundle", m.Cert, m.Cert, m.Key,
			[]string{"the CA bundle " + m.Cert + " does not vouch for"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newStallProxy(t, m.IP, strings.TrimPrefix(m.Endpoint, "https://"), 1<<62)
			dir := t.TempDir()
			code, stderr := m.save(t, dir, "--endpoints", p.endpoint(), "--cacert", tt.cacert, "--cert", tt.cert, "--key", tt.key)
			if code != exitcode.Usage {
				t.Fatalf("exit %d, want %d:\n%s", code, exitcode.Usage, stderr)
			}
			var errLines []string
			for _, line := range strings.Split(stderr, "\n") {
				if strings.Contains(line, "ERROR") {
					errLines = append(errLines, line)
				}
			}
			if len(errLines) != 1 {
				t.Fatalf("want one error line, got %d:\n%s", len(errLines), stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(errLines[0], want) {
					t.Errorf("error lacks %q:\n%s", want, errLines[0])
				}
			}
			for _, wrong := range []string{"--force", "is etcd running", "preflight"} {
				if strings.Contains(stderr, wrong) {
					t.Errorf("output says %q, which cannot help:\n%s", wrong, stderr)
				}
			}
			if got := p.dialled() > 0; got != tt.dialled {
				t.Errorf("member dialled: %v, want %v", got, tt.dialled)
			}
			if got := dirNames(t, dir); len(got) != 0 {
				t.Errorf("refused save left %v", got)
			}
		})
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// stalledSave starts a save through a proxy that stalls the snapshot midway,
// and returns once it has stalled.
func stalledSave(t *testing.T) (*master, *stallProxy, string) {
	m := newMaster(t, testcluster.Options{})
	if err := m.Fill(t.Context(), 24<<20); err != nil {
		t.Fatal(err)
	}
	p := newStallProxy(t, m.IP, strings.TrimPrefix(m.Endpoint, "https://"), 8<<20)
	return m, p, t.TempDir()
}

func TestSaveEtcdStopsMidSnapshot(t *testing.T) {
	m, p, dir := stalledSave(t)
	done := make(chan int, 1)
	var stderr string
	go func() {
		var code int
		code, stderr = m.save(t, dir, "--endpoints", p.endpoint())
		done <- code
	}()
	select {
	case <-p.stalled:
	case code := <-done:
		t.Fatalf("save finished (exit %d) before the snapshot stalled:\n%s", code, stderr)
	}
	// The member goes down and its connections with it. Stop waits for its
	// streams, so the connections are cut while it stops.
	stopped := make(chan struct{})
	go func() { m.Stop(); close(stopped) }()
	p.Close()
	<-stopped
	if code := <-done; code != exitcode.Failure {
		t.Fatalf("exit %d, want %d:\n%s", code, exitcode.Failure, stderr)
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("interrupted save left %v", got)
	}
}

func TestSaveSIGTERM(t *testing.T) {
	m, p, dir := stalledSave(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := selfCommand(ctx, "save", "--host-root", m.HostRoot, "--endpoints", p.endpoint(), dir)
	cmd.Env = append(cmd.Env, "NODE_NAME="+m.NodeName)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	<-p.stalled
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitcode.Failure {
		t.Fatalf("after SIGTERM: %v, want exit %d:\n%s", err, exitcode.Failure, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted by terminated") {
		t.Errorf("no word of the signal:\n%s", stderr.String())
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("SIGTERM left %v", got)
	}
}

// TestSaveUnwritableDir runs as an unprivileged user where the tests run as
// root, since root writes through permission bits.
func TestSaveUnwritableDir(t *testing.T) {
	dir := readOnlyDir(t)
	wantUsageUnprivileged(t, "backup directory "+dir+" is not writable", "save", dir)
}

// readOnlyDir returns a new directory that every user may reach and only
// root may write.
func readOnlyDir(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	readableByAll(t, base)
	dir := filepath.Join(base, "ro")
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	return dir
}

// wantUsageUnprivileged runs etcd-backup with args as an unprivileged user
// and wants exit 2, saying want.
func wantUsageUnprivileged(t *testing.T, want string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := unprivileged(ctx, t, args...).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitcode.Usage || !strings.Contains(string(out), want) {
		t.Errorf("etcd-backup %s as an unprivileged user: %v, want exit %d saying %q:\n%s", strings.Join(args, " "), err, exitcode.Usage, want, out)
	}
}

// unprivileged runs this test binary's main with args as an unprivileged
// user: nobody where the tests run as root, since root writes through
// permission bits.
func unprivileged(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		return selfCommand(ctx, args...)
	}
	cmd := exec.CommandContext(ctx, copyExecutable(t), args...)
	cmd.Env = []string{"ETCD_BACKUP_TEST_MAIN=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}

// readableByAll lets any user reach dir and read everything in it.
func readableByAll(t *testing.T, dir string) {
	t.Helper()
	for d := filepath.Dir(dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if e.IsDir() {
			mode = 0o755
		}
		return os.Chmod(path, mode)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// copyExecutable puts this test binary where an unprivileged user may run it.
func copyExecutable(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	readableByAll(t, dir)
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "etcd-backup")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestSaveWaitsForUpgrade(t *testing.T) {
	m := newMaster(t, testcluster.Options{Upgrading: true})
	target := testcluster.NextVersion(testcluster.DefaultVersion)
	dir := t.TempDir()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		lookup := func(k string) (string, bool) { v, ok := m.env[k]; return v, ok }
		done <- run(t.Context(), []string{"save", "--host-root", m.HostRoot, "--wait-for-version", target,
			"--poll-interval", "20ms", "--wait-timeout", "2m", dir}, lookup, io.Discard, pw)
		pw.Close()
	}()
	// Complete the upgrade only once save has seen it in flight.
	var log bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(log.String(), "still waiting") {
		n, err := pr.Read(buf)
		if err != nil {
			t.Fatalf("save ended before waiting: %v\n%s", err, log.String())
		}
		log.Write(buf[:n])
	}
	if err := m.CompleteUpgrade(t.Context()); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	if code := <-done; code != 0 {
		t.Fatalf("exit %d:\n%s", code, log.String())
	}
	if b := readManifest(t, dir); b.Cluster.Version != target || b.Cluster.UpgradeInProgress {
		t.Errorf("backup records version %q (upgrading %v), want %q completed", b.Cluster.Version, b.Cluster.UpgradeInProgress, target)
	}
}

func TestSaveWaitTimesOut(t *testing.T) {
	m := newMaster(t, testcluster.Options{Upgrading: true})
	dir := t.TempDir()
	code, stderr := m.save(t, dir, "--wait-for-version", testcluster.NextVersion(testcluster.DefaultVersion),
		"--poll-interval", "20ms", "--wait-timeout", "200ms")
	if code != exitcode.Preflight || !strings.Contains(stderr, "did not complete the update") {
		t.Fatalf("exit %d, want %d:\n%s", code, exitcode.Preflight, stderr)
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("left %v", got)
	}
}

// TestSaveAbandonsStalledSnapshot: a member that stops sending mid-stream
// fails the step after --stall-timeout instead of holding it until the
// pipeline's deadline, and leaves nothing.
func TestSaveAbandonsStalledSnapshot(t *testing.T) {
	m, p, dir := stalledSave(t)
	code, stderr := m.save(t, dir, "--endpoints", p.endpoint(), "--stall-timeout", "500ms")
	if code != exitcode.Failure || !strings.Contains(stderr, "no snapshot data") {
		t.Fatalf("exit %d, want %d saying the stream stalled:\n%s", code, exitcode.Failure, stderr)
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("stalled save left %v", got)
	}
}

// TestSaveRefusesLockedDir: two runs can never fill one directory.
func TestSaveRefusesLockedDir(t *testing.T) {
	m := newMaster(t, testcluster.Options{})
	dir := t.TempDir()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	code, stderr := m.save(t, dir)
	if code != exitcode.Usage || !strings.Contains(stderr, "in use by another run") {
		t.Fatalf("exit %d, want %d:\n%s", code, exitcode.Usage, stderr)
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("refused save left %v", got)
	}
}
