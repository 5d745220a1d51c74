// Package discovery finds the local etcd member of a control-plane node. On
// an OpenShift master it reads, as cluster-backup.sh does, the etcd.env file
// the etcd operator writes into the host's static pod resources; on a kubeadm
// node, which has no such file, it reads kubeadm's etcd static pod manifest
// and uses the healthcheck client certificate kubeadm issues beside the CA.
//
// Discover only reads those files; merging flags and ETCDCTL_* variables
// over what it finds is the caller's business.
package discovery

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// EnvFile is where the etcd operator writes etcd.env, relative to the host root.
const EnvFile = "etc/kubernetes/static-pod-resources/etcd-certs/configmaps/etcd-scripts/etcd.env"

const (
	// podCertsDir is where the etcd pod mounts the host's hostCertsDir; the
	// paths in etcd.env are written for the pod.
	podCertsDir  = "/etc/kubernetes/static-pod-certs"
	hostCertsDir = "/etc/kubernetes/static-pod-resources/etcd-certs"
	clientPort   = "2379"
)

// Member is how to reach the local etcd member. The certificate paths are
// host paths already resolved under the host root.
type Member struct {
	Endpoint string
	CACert   string
	Cert     string
	Key      string
}

// nodeNameRE is a Kubernetes node name (an RFC 1123 subdomain). Checking it
// keeps a stray NODE_NAME from steering certificate paths out of their
// directory.
var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// Discover reads etcd.env under hostRoot and returns the local member of
// node nodeName: its client URL from NODE_<name>_IP (never the cluster-wide
// ETCDCTL_ENDPOINTS, so the snapshot comes from this member alone) and the
// ETCDCTL_CACERT, ETCDCTL_CERT and ETCDCTL_KEY paths, with the operator's
// NODE_NAME placeholder filled in and the pod's static-pod-certs mount
// mapped back to its host directory.
//
// Where there is no etcd.env but kubeadm's manifests/etcd.yaml, Discover
// returns the member that manifest runs instead: its advertised https client
// URL and the pki/etcd CA and healthcheck-client pair; nodeName is not used.
func Discover(hostRoot, nodeName string) (Member, error) {
	file := filepath.Join(hostRoot, filepath.FromSlash(EnvFile))
	env, err := readEnv(file)
	if errors.Is(err, fs.ErrNotExist) {
		m, kerr := discoverKubeadm(hostRoot)
		if errors.Is(kerr, fs.ErrNotExist) {
			return Member{}, errNotFound(file, filepath.Join(hostRoot, filepath.FromSlash(KubeadmManifest)))
		}
		return m, kerr
	}
	if err != nil {
		return Member{}, err
	}
	if nodeName == "" {
		return Member{}, errors.New("discover etcd member: node name is empty: set NODE_NAME or --node-name")
	}
	if len(nodeName) > 253 || !nodeNameRE.MatchString(nodeName) {
		return Member{}, fmt.Errorf("discover etcd member: node name %q is not a valid Kubernetes node name", nodeName)
	}
	m := Member{}
	if m.Endpoint, err = endpoint(env, file, nodeName); err != nil {
		return Member{}, err
	}
	for _, c := range []struct {
		key string
		dst *string
	}{
		{"ETCDCTL_CACERT", &m.CACert},
		{"ETCDCTL_CERT", &m.Cert},
		{"ETCDCTL_KEY", &m.Key},
	} {
		if *c.dst, err = certPath(env, file, c.key, hostRoot, nodeName); err != nil {
			return Member{}, err
		}
	}
	return m, nil
}

// EnvVarName returns the etcd.env variable holding the IP of nodeName's
// member, named as the etcd operator names it.
func EnvVarName(nodeName string) string {
	return "NODE_" + strings.NewReplacer("-", "_", ".", "_").Replace(nodeName) + "_IP"
}

func readEnv(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("discover etcd member: %w", err)
	}
	defer f.Close()
	env, err := ParseEnv(f)
	if err != nil {
		return nil, fmt.Errorf("discover etcd member: %s: %w", file, err)
	}
	return env, nil
}

func endpoint(env map[string]string, file, nodeName string) (string, error) {
	key := EnvVarName(nodeName)
	ip, ok := env[key]
	if !ok {
		return "", fmt.Errorf("discover etcd member: %s has no %s for node %q (%s); check NODE_NAME or pass --endpoints",
			file, key, nodeName, describeNodeVars(env))
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return "", fmt.Errorf("discover etcd member: %s=%q in %s is not an IP address", key, ip, file)
	}
	return "https://" + net.JoinHostPort(addr.String(), clientPort), nil
}

// describeNodeVars lists the member IP variables etcd.env does have, so a
// mistyped or differently spelled node name is easy to spot.
func describeNodeVars(env map[string]string) string {
	var names []string
	for k := range env {
		if strings.HasPrefix(k, "NODE_") && strings.HasSuffix(k, "_IP") && len(k) > len("NODE__IP") {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return "it has no NODE_*_IP variables"
	}
	slices.Sort(names)
	return "it has " + strings.Join(names, ", ")
}

func certPath(env map[string]string, file, key, hostRoot, nodeName string) (string, error) {
	v, ok := env[key]
	if !ok || v == "" {
		return "", fmt.Errorf("discover etcd member: %s sets no %s; pass --cacert/--cert/--key", file, key)
	}
	// The operator writes the node name as a placeholder the pod's shell
	// fills in; both spellings occur.
	p := strings.NewReplacer("${NODE_NAME}", nodeName, "$NODE_NAME", nodeName, "NODE_NAME", nodeName).Replace(v)
	if !path.IsAbs(p) {
		return "", fmt.Errorf("discover etcd member: %s=%q in %s is not an absolute path", key, v, file)
	}
	p = path.Clean(p)
	if rest, ok := strings.CutPrefix(p, podCertsDir); ok && (rest == "" || rest[0] == '/') {
		p = hostCertsDir + rest
	}
	return filepath.Join(hostRoot, filepath.FromSlash(p)), nil
}
