package discovery

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// KubeadmManifest is the etcd static pod manifest kubeadm writes on a
// control-plane node with stacked etcd, relative to the host root.
const KubeadmManifest = "etc/kubernetes/manifests/etcd.yaml"

const (
	// advertiseAnnotation is where kubeadm records the member's client URL
	// on its etcd pod, so that it need not parse the command line.
	advertiseAnnotation = "kubeadm.kubernetes.io/etcd.advertise-client-urls"
	advertiseFlag       = "--advertise-client-urls="
	// kubeadmPKI holds the etcd CA and the healthcheck client pair kubeadm
	// issues for exactly this kind of local tooling.
	kubeadmPKI = "etc/kubernetes/pki/etcd"
	// maxManifestSize bounds what is read of etcd.yaml: a few KiB.
	maxManifestSize = 4 << 20
)

// etcdPod is the part of kubeadm's etcd pod that names the client URL.
type etcdPod struct {
	Metadata struct {
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Containers []struct {
			Command []string `json:"command"`
			Args    []string `json:"args"`
		} `json:"containers"`
	} `json:"spec"`
}

// discoverKubeadm reads kubeadm's etcd manifest under hostRoot and returns
// the member it runs, reached with the healthcheck client certificate.
func discoverKubeadm(hostRoot string) (Member, error) {
	file := filepath.Join(hostRoot, filepath.FromSlash(KubeadmManifest))
	p, err := readPod(file)
	if err != nil {
		return Member{}, err
	}
	ep, err := kubeadmEndpoint(p)
	if err != nil {
		return Member{}, fmt.Errorf("discover etcd member: %s: %w; pass --endpoints", file, err)
	}
	pki := filepath.Join(hostRoot, filepath.FromSlash(kubeadmPKI))
	return Member{
		Endpoint: ep,
		CACert:   filepath.Join(pki, "ca.crt"),
		Cert:     filepath.Join(pki, "healthcheck-client.crt"),
		Key:      filepath.Join(pki, "healthcheck-client.key"),
	}, nil
}

// readPod decodes the manifest at file. A missing file wraps
// fs.ErrNotExist, for Discover to recognise.
func readPod(file string) (etcdPod, error) {
	f, err := os.Open(file)
	if err != nil {
		return etcdPod{}, fmt.Errorf("discover etcd member: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return etcdPod{}, fmt.Errorf("discover etcd member: read %s: %w", file, err)
	}
	if len(data) > maxManifestSize {
		return etcdPod{}, fmt.Errorf("discover etcd member: %s is larger than %d bytes", file, maxManifestSize)
	}
	var p etcdPod
	if err := yaml.Unmarshal(data, &p); err != nil {
		return etcdPod{}, fmt.Errorf("discover etcd member: decode %s: %w", file, err)
	}
	return p, nil
}

// kubeadmEndpoint returns the first https URL kubeadm advertises for the
// member: from the annotation if there is one, else from the etcd command
// line. Plain http URLs are passed over, because the client always speaks
// TLS with the healthcheck certificate.
func kubeadmEndpoint(p etcdPod) (string, error) {
	if v, ok := p.Metadata.Annotations[advertiseAnnotation]; ok {
		return firstHTTPS(v, "annotation "+advertiseAnnotation)
	}
	for _, c := range p.Spec.Containers {
		for _, arg := range append(c.Command, c.Args...) {
			if v, ok := strings.CutPrefix(arg, advertiseFlag); ok {
				return firstHTTPS(v, strings.TrimSuffix(advertiseFlag, "="))
			}
		}
	}
	return "", fmt.Errorf("neither annotation %s nor %s found", advertiseAnnotation, strings.TrimSuffix(advertiseFlag, "="))
}

// firstHTTPS returns the first https URL of the comma-separated list urls,
// reduced to scheme and host as the etcd client wants an endpoint.
func firstHTTPS(urls, where string) (string, error) {
	for _, s := range strings.Split(urls, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || strings.Trim(u.Path, "/") != "" {
			continue
		}
		return "https://" + u.Host, nil
	}
	return "", fmt.Errorf("%s %q has no https URL", where, urls)
}

// errNotFound says that neither layout is there, and what to do about it.
func errNotFound(envFile, manifest string) error {
	return errors.New("discover etcd member: found neither " + envFile + " (OpenShift) nor " + manifest +
		" (kubeadm): is the host's / mounted at --host-root? Otherwise pass --endpoints/--cacert/--cert/--key")
}
