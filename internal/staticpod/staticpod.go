// Package staticpod finds the revision of each control plane static pod that
// the kubelet is running on an OpenShift master.
//
// The revision is read from the pod manifest the kubelet runs, not guessed
// from the newest static-pod-resources directory: an installer may already
// have written revision N+1 while N is still the one serving. A kubeadm node
// has no revisions: its static pods run from plain manifests.
package staticpod

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Components are the static pods whose resources a backup archives, as
// cluster-backup.sh does.
var Components = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"}

const (
	// ResourcesDir holds the revision directories, relative to /etc/kubernetes.
	ResourcesDir = "static-pod-resources"
	manifestsDir = "manifests"
	kubeDir      = "etc/kubernetes"
	// kubeadmEtcd is the etcd manifest kubeadm writes, in manifestsDir.
	kubeadmEtcd = "etcd.yaml"
)

// maxManifestSize bounds what RunningRevision reads: a pod manifest is tens of KiB.
const maxManifestSize = 4 << 20

// Revision is the running revision of one component.
type Revision struct {
	Component string
	Revision  int
	// Dir is the revision directory relative to /etc/kubernetes,
	// "static-pod-resources/<component>-pod-<N>".
	Dir string
}

// RevisionDir returns the revision directory of component relative to
// /etc/kubernetes.
func RevisionDir(component string, revision int) string {
	return ResourcesDir + "/" + component + "-pod-" + strconv.Itoa(revision)
}

// ParseRevisionDir is the inverse of RevisionDir: it reports whether dir is
// the revision directory of one of Components, and which.
func ParseRevisionDir(dir string) (component string, revision int, ok bool) {
	base, ok := strings.CutPrefix(dir, ResourcesDir+"/")
	if !ok {
		return "", 0, false
	}
	for _, c := range Components {
		digits, found := strings.CutPrefix(base, c+"-pod-")
		if !found || !isRevision(digits) {
			continue
		}
		if n, err := strconv.Atoi(digits); err == nil {
			return c, n, true
		}
	}
	return "", 0, false
}

// pod is the part of a Pod that names the revision.
type pod struct {
	Spec struct {
		Volumes []struct {
			HostPath *struct {
				Path string `json:"path"`
			} `json:"hostPath"`
		} `json:"volumes"`
	} `json:"spec"`
}

// RunningRevision returns the revision N of component that the pod manifest
// read from r runs: the N of its hostPath volume
// /etc/kubernetes/static-pod-resources/<component>-pod-<N>. The manifest may
// be JSON (as OpenShift writes it) or YAML.
func RunningRevision(r io.Reader, component string) (int, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxManifestSize+1))
	if err != nil {
		return 0, fmt.Errorf("read %s pod manifest: %w", component, err)
	}
	if len(data) > maxManifestSize {
		return 0, fmt.Errorf("%s pod manifest is larger than %d bytes", component, maxManifestSize)
	}
	var p pod
	if err := yaml.Unmarshal(data, &p); err != nil {
		return 0, fmt.Errorf("decode %s pod manifest: %w", component, err)
	}
	prefix := "/etc/kubernetes/" + ResourcesDir + "/" + component + "-pod-"
	revision := 0
	for _, v := range p.Spec.Volumes {
		if v.HostPath == nil {
			continue
		}
		digits, ok := strings.CutPrefix(path.Clean(v.HostPath.Path), prefix)
		if !ok || !isRevision(digits) {
			continue
		}
		n, err := strconv.Atoi(digits)
		if err != nil {
			return 0, fmt.Errorf("%s pod manifest: revision in hostPath %q: %w", component, v.HostPath.Path, err)
		}
		if revision != 0 && n != revision {
			return 0, fmt.Errorf("%s pod manifest mounts two revisions, %d and %d", component, revision, n)
		}
		revision = n
	}
	if revision == 0 {
		return 0, fmt.Errorf("%s pod manifest has no hostPath volume /etc/kubernetes/%s/%s-pod-<N>", component, ResourcesDir, component)
	}
	return revision, nil
}

// isRevision reports whether s is a revision number as the operators write
// them: decimal, no sign, no leading zero.
func isRevision(s string) bool {
	if s == "" || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Running returns the running revision of each of Components on the host
// mounted at hostRoot, checking that its directory is there to archive. On a
// kubeadm node it returns no revisions and no error.
func Running(hostRoot string) ([]Revision, error) {
	kube := filepath.Join(hostRoot, kubeDir)
	if isKubeadm(kube) {
		return nil, nil
	}
	revs := make([]Revision, 0, len(Components))
	for _, c := range Components {
		n, err := runningRevision(kube, c)
		if err != nil {
			return nil, err
		}
		rev := Revision{Component: c, Revision: n, Dir: RevisionDir(c, n)}
		if err := checkDir(kube, rev); err != nil {
			return nil, err
		}
		revs = append(revs, rev)
	}
	return revs, nil
}

// isKubeadm reports whether kube is the /etc/kubernetes of a kubeadm node:
// etcd runs from kubeadm's etcd.yaml and not one OpenShift pod manifest is
// there. A master missing only some of them is still OpenShift, and broken.
func isKubeadm(kube string) bool {
	for _, c := range Components {
		if _, err := os.Stat(podManifest(kube, c)); !errors.Is(err, fs.ErrNotExist) {
			return false
		}
	}
	_, err := os.Stat(filepath.Join(kube, manifestsDir, kubeadmEtcd))
	return err == nil
}

func podManifest(kube, component string) string {
	return filepath.Join(kube, manifestsDir, component+"-pod.yaml")
}

func runningRevision(kube, component string) (int, error) {
	file := podManifest(kube, component)
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("find running %s revision: %s not found (is the host's /etc/kubernetes mounted under --host-root, and is this a master node?)", component, file)
	}
	if err != nil {
		return 0, fmt.Errorf("find running %s revision: %w", component, err)
	}
	defer f.Close()
	n, err := RunningRevision(f, component)
	if err != nil {
		return 0, fmt.Errorf("find running %s revision in %s: %w", component, file, err)
	}
	return n, nil
}

// checkDir makes sure the revision directory is a real directory: a symlink
// would be archived as a link, leaving restore without the resources.
func checkDir(kube string, rev Revision) error {
	dir := filepath.Join(kube, filepath.FromSlash(rev.Dir))
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s runs revision %d but %s does not exist; wait for the installer to finish and retry", rev.Component, rev.Revision, dir)
	case err != nil:
		return fmt.Errorf("check %s revision %d: %w", rev.Component, rev.Revision, err)
	case !fi.IsDir():
		return fmt.Errorf("%s runs revision %d but %s is not a directory", rev.Component, rev.Revision, dir)
	}
	return nil
}
