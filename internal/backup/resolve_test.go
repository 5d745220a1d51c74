package backup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/discovery"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/member"
)

// kubeadmHost returns a host root holding only kubeadm's etcd manifest.
func kubeadmHost(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	file := filepath.Join(root, filepath.FromSlash(discovery.KubeadmManifest))
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	const pod = "metadata:\n  annotations:\n    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://10.2.0.1:2379\n"
	if err := os.WriteFile(file, []byte(pod), 0o600); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestResolveMember(t *testing.T) {
	kubeadm := kubeadmHost(t)
	pki := filepath.Join(kubeadm, "etc", "kubernetes", "pki", "etcd")
	tests := []struct {
		name string
		opts Options
		want member.Config
	}{
		{
			name: "kubeadm, nothing given",
			opts: Options{HostRoot: kubeadm},
			want: member.Config{Endpoint: "https://10.2.0.1:2379", CACert: filepath.Join(pki, "ca.crt"),
				Cert: filepath.Join(pki, "healthcheck-client.crt"), Key: filepath.Join(pki, "healthcheck-client.key")},
		},
		{
			name: "kubeadm, endpoint and key given",
			opts: Options{HostRoot: kubeadm, Endpoint: "https://127.0.0.1:2379", Key: "/k"},
			want: member.Config{Endpoint: "https://127.0.0.1:2379", CACert: filepath.Join(pki, "ca.crt"),
				Cert: filepath.Join(pki, "healthcheck-client.crt"), Key: "/k"},
		},
		{
			name: "all given, no host tree",
			opts: Options{HostRoot: t.TempDir(), Endpoint: "https://e:2379", CACert: "/ca", Cert: "/c", Key: "/k"},
			want: member.Config{Endpoint: "https://e:2379", CACert: "/ca", Cert: "/c", Key: "/k"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveMember(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestResolveMemberErrors(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"neither layout", Options{HostRoot: t.TempDir()}, "(kubeadm)"},
		{"several members", Options{HostRoot: kubeadmHost(t), Endpoint: "https://a:2379,https://b:2379"}, "exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := resolveMember(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || exitcode.Of(err) != exitcode.Usage {
				t.Fatalf("err = %v (exit %d), want usage error containing %q", err, exitcode.Of(err), tt.want)
			}
		})
	}
}
