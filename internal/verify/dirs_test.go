package verify

import (
	"slices"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

func TestRevisionDirs(t *testing.T) {
	tests := []struct {
		name string
		pods []manifest.StaticPod
		want []string
	}{
		{"kubeadm", nil, []string{"manifests", "pki"}},
		{"openshift", []manifest.StaticPod{{Component: "kube-apiserver", Revision: 7}, {Component: "etcd", Revision: 5}},
			[]string{"static-pod-resources/kube-apiserver-pod-7", "static-pod-resources/etcd-pod-5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := revisionDirs(&manifest.Backup{StaticPods: tt.pods}); !slices.Equal(got, tt.want) {
				t.Errorf("revisionDirs = %q, want %q", got, tt.want)
			}
		})
	}
}
