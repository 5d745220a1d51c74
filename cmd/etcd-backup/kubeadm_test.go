package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/preflight"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// TestSaveKubeadm backs up a kubeadm control-plane node given nothing but
// where its / is mounted: no NODE_NAME, no etcd flags.
func TestSaveKubeadm(t *testing.T) {
	m := newMaster(t, testcluster.Options{Platform: testcluster.PlatformKubernetes, Keys: 100})
	dir := filepath.Join(t.TempDir(), "backup")
	results := t.TempDir()
	code, _, stderr := cli(t, nil, "save", "--host-root", m.HostRoot, "--results-dir", results, dir)
	if code != 0 {
		t.Fatalf("save exit %d:\n%s", code, stderr)
	}
	b := readManifest(t, dir)
	ts := b.Timestamp
	want := []string{manifest.FileName, manifest.SnapshotName(ts, false), manifest.ResourcesName(ts, false)}
	slices.Sort(want)
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Errorf("backup dir holds %v, want %v", got, want)
	}
	for _, name := range want {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 0600 (%v)", name, fi.Mode(), err)
		}
	}

	switch c := b.Cluster; {
	case c.Platform != "kubernetes" || c.ID != "" || c.Version != "" || c.UpgradeInProgress || c.CreatedAt != nil:
		t.Errorf("cluster %+v, want platform kubernetes and no ClusterVersion data", c)
	case len(b.StaticPods) != 0:
		t.Errorf("static pods %v on kubeadm", b.StaticPods)
	case b.Dirty:
		t.Error("clean backup marked dirty")
	case b.Etcd.Endpoint != m.Endpoint || b.Etcd.ClusterID == "" || b.Etcd.KeyCount < 100:
		t.Errorf("etcd %+v, want the member at %s", b.Etcd, m.Endpoint)
	case b.EncryptionConfigArchived:
		t.Error("encryption config recorded as archived")
	case b.EarliestCertExpiry == nil || !strings.HasPrefix(b.EarliestCertExpiry.Path, "pki/"):
		t.Errorf("earliest cert %+v, want one under pki/", b.EarliestCertExpiry)
	}
	var skipped []string
	for _, s := range b.SkippedChecks {
		skipped = append(skipped, s.Name)
		if s.Reason == "" || !strings.Contains(stderr, "preflight "+s.Name+" skipped") {
			t.Errorf("skipped check %+v has no reason, or was not logged", s)
		}
	}
	if wantSkipped := []string{preflight.StaticPods, preflight.ClusterOperators, preflight.ClusterVersion, preflight.ClusterAge}; !slices.Equal(skipped, wantSkipped) {
		t.Errorf("skipped checks %v, want %v", skipped, wantSkipped)
	}
	if line := "snapshot db and kube resources are successfully saved to " + dir; !strings.Contains(stderr, line) {
		t.Errorf("output lacks %q:\n%s", line, stderr)
	}
	if got, err := os.ReadFile(filepath.Join(results, "cluster-version")); err != nil || len(got) != 0 {
		t.Errorf("result cluster-version = %q (%v), want empty", got, err)
	}

	if code, _, stderr := cli(t, nil, "verify", "--restore", dir); code != 0 {
		t.Errorf("verify --restore: exit %d\n%s", code, stderr)
	}

	// Restore as kubeadm's documentation has it: everything, into /etc/kubernetes.
	out := t.TempDir()
	tarball := filepath.Join(dir, b.File(manifest.KindResources).Name)
	if msg, err := exec.Command("tar", "-C", out, "-xzf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v\n%s", err, msg)
	}
	if got := dirNames(t, out); !slices.Equal(got, []string{"manifests", "pki"}) {
		t.Errorf("archive extracts to %v, want manifests and pki", got)
	}
	kube := filepath.Join(m.HostRoot, "etc", "kubernetes")
	for _, d := range []string{"manifests", "pki"} {
		if got, want := treeOf(t, out, d), treeOf(t, kube, d); !slices.Equal(got, want) {
			t.Errorf("extracted %s differs from the host:\n got %v\nwant %v", d, got, want)
		}
	}
}
