package staticpod

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// jsonManifest is a pod manifest as OpenShift's installer writes it: one
// line of JSON, with other static-pod-resources mounts beside the revision.
func jsonManifest(component string, revision int) string {
	return fmt.Sprintf(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"%[1]s","namespace":"openshift-%[1]s","creationTimestamp":null,"labels":{"app":"openshift-%[1]s","revision":"%[2]d"}},`+
		`"spec":{"volumes":[{"name":"resource-dir","hostPath":{"path":"/etc/kubernetes/static-pod-resources/%[1]s-pod-%[2]d"}},`+
		`{"name":"cert-dir","hostPath":{"path":"/etc/kubernetes/static-pod-resources/%[1]s-certs"}},`+
		`{"name":"audit-dir","hostPath":{"path":"/var/log/%[1]s"}},{"name":"tmp","emptyDir":{}}],`+
		`"containers":[{"name":"%[1]s","image":"registry.example/openshift/%[1]s","volumeMounts":[{"name":"resource-dir","mountPath":"/etc/kubernetes/static-pod-resources"}]}],`+
		`"hostNetwork":true,"priorityClassName":"system-node-critical"},"status":{}}`, component, revision)
}

const yamlManifest = `apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: openshift-etcd
  labels:
    revision: "5"
spec:
  containers:
  - name: etcd
    image: registry.example/openshift/etcd
  volumes:
  - name: static-pod-dir
    hostPath:
      path: /etc/kubernetes/manifests
  - name: resource-dir
    hostPath:
      path: /etc/kubernetes/static-pod-resources/etcd-pod-5/
  - name: cert-dir
    hostPath:
      path: /etc/kubernetes/static-pod-resources/etcd-certs
  - name: data-dir
    hostPath:
      path: /var/lib/etcd
`

// volumes returns a manifest mounting each path as a hostPath.
func volumes(paths ...string) string {
	var b strings.Builder
	b.WriteString("spec:\n  volumes:\n")
	for i, p := range paths {
		fmt.Fprintf(&b, "  - name: v%d\n    hostPath:\n      path: %q\n", i, p)
	}
	return b.String()
}

func TestRunningRevision(t *testing.T) {
	const res = "/etc/kubernetes/static-pod-resources/"
	tests := []struct {
		name      string
		manifest  string
		component string
		want      int
		wantErr   string
	}{
		{"one-line JSON", jsonManifest("kube-apiserver", 7), "kube-apiserver", 7, ""},
		{"JSON of a long name", jsonManifest("kube-controller-manager", 123), "kube-controller-manager", 123, ""},
		{"YAML", yamlManifest, "etcd", 5, ""},
		{"same revision twice", volumes(res+"etcd-pod-3", res+"etcd-pod-3"), "etcd", 3, ""},
		{"other component's manifest", jsonManifest("kube-scheduler", 4), "kube-apiserver", 0, "no hostPath volume /etc/kubernetes/static-pod-resources/kube-apiserver-pod-<N>"},
		{"no volumes", "spec: {}", "etcd", 0, "no hostPath volume"},
		{"not exactly the revision dir", volumes(res+"etcd-pod-3/secrets", "/etc/kubernetes/static-pod-resources/etcd-pod-", res+"etcd-pod-03", res+"etcd-pod-3a", "static-pod-resources/etcd-pod-3"), "etcd", 0, "no hostPath volume"},
		{"two revisions", volumes(res+"etcd-pod-3", res+"etcd-pod-4"), "etcd", 0, "mounts two revisions, 3 and 4"},
		{"revision overflows", volumes(res + "etcd-pod-99999999999999999999"), "etcd", 0, "value out of range"},
		{"not a manifest", "{{{", "etcd", 0, "decode etcd pod manifest"},
		{"too large", strings.Repeat(" ", maxManifestSize+1), "etcd", 0, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RunningRevision(strings.NewReader(tt.manifest), tt.component)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

// host builds /etc/kubernetes under a new host root: a manifest running
// revs[c] for each component, and a directory for each revision listed in dirs.
func host(t *testing.T, revs map[string]int, dirs ...string) string {
	t.Helper()
	root := t.TempDir()
	kube := filepath.Join(root, kubeDir)
	for _, d := range append([]string{manifestsDir}, dirs...) {
		if err := os.MkdirAll(filepath.Join(kube, filepath.FromSlash(d)), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for c, n := range revs {
		if err := os.WriteFile(filepath.Join(kube, manifestsDir, c+"-pod.yaml"), []byte(jsonManifest(c, n)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func allRunning() map[string]int {
	return map[string]int{"kube-apiserver": 7, "kube-controller-manager": 9, "kube-scheduler": 6, "etcd": 5}
}

func allDirs() []string {
	return []string{
		RevisionDir("kube-apiserver", 7), RevisionDir("kube-controller-manager", 9),
		RevisionDir("kube-scheduler", 6), RevisionDir("etcd", 5),
	}
}

func TestRunning(t *testing.T) {
	// Older revisions and a newer one the installer has written but the
	// kubelet does not run yet: neither may be picked.
	dirs := append(allDirs(), RevisionDir("kube-apiserver", 6), RevisionDir("kube-apiserver", 8), RevisionDir("etcd", 10))
	root := host(t, allRunning(), dirs...)
	future := time.Now().Add(time.Hour)
	newer := filepath.Join(root, kubeDir, filepath.FromSlash(RevisionDir("kube-apiserver", 8)))
	if err := os.Chtimes(newer, future, future); err != nil {
		t.Fatal(err)
	}

	got, err := Running(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Revision{
		{"kube-apiserver", 7, "static-pod-resources/kube-apiserver-pod-7"},
		{"kube-controller-manager", 9, "static-pod-resources/kube-controller-manager-pod-9"},
		{"kube-scheduler", 6, "static-pod-resources/kube-scheduler-pod-6"},
		{"etcd", 5, "static-pod-resources/etcd-pod-5"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

// writeKubeadmEtcd adds kubeadm's etcd manifest to the host tree at root.
func writeKubeadmEtcd(t *testing.T, root string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, kubeDir, manifestsDir, kubeadmEtcd), []byte(volumes("/etc/kubernetes/pki/etcd", "/var/lib/etcd")), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRunningKubeadm(t *testing.T) {
	tests := []struct {
		name  string
		extra []string // more files in manifests/
	}{
		{"etcd only", nil},
		{"whole control plane", []string{"kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := host(t, nil)
			writeKubeadmEtcd(t, root)
			for _, name := range tt.extra {
				if err := os.WriteFile(filepath.Join(root, kubeDir, manifestsDir, name), []byte(volumes("/etc/kubernetes/pki")), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Running(root)
			if err != nil || got != nil {
				t.Fatalf("got %v, %v; want no revisions and no error", got, err)
			}
		})
	}
}

func TestRunningErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		want  []string
	}{
		{
			name: "missing revision dir",
			setup: func(t *testing.T) string {
				return host(t, allRunning(), slices.Delete(allDirs(), 1, 2)...)
			},
			want: []string{"kube-controller-manager runs revision 9 but", "static-pod-resources/kube-controller-manager-pod-9 does not exist", "retry"},
		},
		{
			name: "revision dir is a symlink",
			setup: func(t *testing.T) string {
				root := host(t, allRunning(), append(slices.Delete(allDirs(), 3, 4), RevisionDir("etcd", 4))...)
				res := filepath.Join(root, kubeDir, ResourcesDir)
				if err := os.Symlink("etcd-pod-4", filepath.Join(res, "etcd-pod-5")); err != nil {
					t.Fatal(err)
				}
				return root
			},
			want: []string{"etcd runs revision 5 but", "etcd-pod-5 is not a directory"},
		},
		{
			name: "missing manifest",
			setup: func(t *testing.T) string {
				revs := allRunning()
				delete(revs, "kube-scheduler")
				return host(t, revs, allDirs()...)
			},
			want: []string{"find running kube-scheduler revision", "manifests/kube-scheduler-pod.yaml not found", "--host-root"},
		},
		{
			name: "manifest without revision",
			setup: func(t *testing.T) string {
				root := host(t, allRunning(), allDirs()...)
				if err := os.WriteFile(filepath.Join(root, kubeDir, manifestsDir, "etcd-pod.yaml"), []byte(volumes("/var/lib/etcd")), 0o600); err != nil {
					t.Fatal(err)
				}
				return root
			},
			want: []string{"manifests/etcd-pod.yaml", "no hostPath volume /etc/kubernetes/static-pod-resources/etcd-pod-<N>"},
		},
		{
			name: "OpenShift master with kubeadm's etcd.yaml",
			setup: func(t *testing.T) string {
				revs := allRunning()
				delete(revs, "etcd")
				root := host(t, revs, allDirs()...)
				writeKubeadmEtcd(t, root)
				return root
			},
			want: []string{"find running etcd revision", "manifests/etcd-pod.yaml not found"},
		},
		{
			name: "one OpenShift manifest beside etcd.yaml",
			setup: func(t *testing.T) string {
				root := host(t, map[string]int{"kube-scheduler": 6}, allDirs()...)
				writeKubeadmEtcd(t, root)
				return root
			},
			want: []string{"find running kube-apiserver revision", "kube-apiserver-pod.yaml not found"},
		},
		{
			name:  "no host tree",
			setup: func(t *testing.T) string { return t.TempDir() },
			want:  []string{"kube-apiserver-pod.yaml not found"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Running(tt.setup(t))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func FuzzRunningRevision(f *testing.F) {
	f.Add(jsonManifest("etcd", 5), "etcd")
	f.Add(yamlManifest, "etcd")
	f.Add(volumes("/etc/kubernetes/static-pod-resources/kube-apiserver-pod-2", "/x"), "kube-apiserver")
	f.Add("spec:\n  volumes: [{hostPath: {path: &a x}}, *a]", "etcd")
	f.Fuzz(func(t *testing.T, manifest, component string) {
		n, err := RunningRevision(strings.NewReader(manifest), component)
		if (err == nil) != (n > 0) {
			t.Fatalf("revision %d with error %v", n, err)
		}
	})
}

func TestParseRevisionDir(t *testing.T) {
	tests := []struct {
		dir       string
		component string
		revision  int
		ok        bool
	}{
		{"static-pod-resources/kube-apiserver-pod-7", "kube-apiserver", 7, true},
		{"static-pod-resources/kube-controller-manager-pod-12", "kube-controller-manager", 12, true},
		{"static-pod-resources/etcd-pod-1", "etcd", 1, true},
		{"static-pod-resources/etcd-pod-0", "", 0, false},
		{"static-pod-resources/etcd-pod-01", "", 0, false},
		{"static-pod-resources/etcd-pod-1/x", "", 0, false},
		{"static-pod-resources/etcd-certs", "", 0, false},
		{"static-pod-resources/kube-apiserver-certs", "", 0, false},
		{"static-pod-resources/foo-pod-1", "", 0, false},
		{"/static-pod-resources/etcd-pod-1", "", 0, false},
		{"etcd-pod-1", "", 0, false},
		{"static-pod-resources/etcd-pod-99999999999999999999", "", 0, false},
	}
	for _, tt := range tests {
		c, n, ok := ParseRevisionDir(tt.dir)
		if c != tt.component || n != tt.revision || ok != tt.ok {
			t.Errorf("ParseRevisionDir(%q) = %q, %d, %v; want %q, %d, %v", tt.dir, c, n, ok, tt.component, tt.revision, tt.ok)
		}
	}
	for _, c := range Components {
		if got, n, ok := ParseRevisionDir(RevisionDir(c, 3)); got != c || n != 3 || !ok {
			t.Errorf("round trip of %s: %q, %d, %v", c, got, n, ok)
		}
	}
}
