package testcluster

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	etcKubernetes = "etc/kubernetes"
	// hostResources is static-pod-resources as the pods see it, in manifests and etcd.env.
	hostResources = "/etc/kubernetes/static-pod-resources"
	etcdCertsDir  = "static-pod-resources/etcd-certs"
	day           = 24 * time.Hour
)

// component is one of the four control-plane static pods whose running
// revision cluster-backup.sh archives.
type component struct {
	name      string
	namespace string
	revision  int // running revision N; N-2, N-1 and the not yet running N+1 exist too
	// certLife is the remaining life of the serving certificate of revision N.
	// Other revisions get shorter ones, so archiving the wrong revision shows
	// up as a wrong earliest expiry.
	certLife time.Duration
}

// openShiftComponents differ in revision so that mixing them up is visible.
// kube-controller-manager holds the earliest-expiring certificate.
func openShiftComponents() []component {
	return []component{
		{name: "etcd", namespace: "openshift-etcd", revision: 3, certLife: 30 * day},
		{name: "kube-apiserver", namespace: "openshift-kube-apiserver", revision: 7, certLife: 40 * day},
		{name: "kube-controller-manager", namespace: "openshift-kube-controller-manager", revision: 5, certLife: 15 * day},
		{name: "kube-scheduler", namespace: "openshift-kube-scheduler", revision: 6, certLife: 25 * day},
	}
}

// writeOpenShiftTree lays out HostRoot/etc/kubernetes as an OpenShift 4
// master has it and fills in the Cluster's paths.
func (c *Cluster) writeOpenShiftTree(now time.Time) error {
	t := &tree{root: filepath.Join(c.HostRoot, etcKubernetes)}
	ca, err := newAuthority("etcd-signer", now.Add(10*365*day))
	if err != nil {
		return err
	}
	c.ca = ca
	if err := c.writeEtcdCerts(t, ca, now); err != nil {
		return err
	}
	c.Revisions = make(map[string]int)
	for _, comp := range openShiftComponents() {
		c.Revisions[comp.name] = comp.revision
		if err := writeComponent(t, ca, comp, now); err != nil {
			return err
		}
	}
	earliest := slices.MinFunc(openShiftComponents(), func(a, b component) int { return cmp.Compare(a.certLife, b.certLife) })
	c.EarliestCertNotAfter = now.Add(earliest.certLife)
	c.EarliestCertPath = path.Join("static-pod-resources", revisionDir(earliest.name, earliest.revision), "secrets/serving-cert/tls.crt")
	c.EncryptionConfig = t.path(path.Join("static-pod-resources", revisionDir("kube-apiserver", c.Revisions["kube-apiserver"]), "secrets/encryption-config/encryption-config"))
	return t.err
}

// writeEtcdCerts writes static-pod-resources/etcd-certs: etcd.env and the
// certificates it names, for this node and its two (absent) peers.
func (c *Cluster) writeEtcdCerts(t *tree, ca *authority, now time.Time) error {
	nodes := []string{c.NodeName}
	ips := []string{c.IP}
	for _, n := range peerNodeNames(c.NodeName) {
		nodes = append(nodes, n)
		ips = append(ips, otherLoopbackIP(ips))
	}
	c.OtherIPs = ips[1:]

	for i, node := range nodes {
		ip := net.ParseIP(ips[i])
		pairs := map[string]certSpec{
			"etcd-peer-" + node: {commonName: "system:etcd-peer:" + node, orgs: []string{"system:etcd-peers"},
				ips: []net.IP{ip}, dnsNames: []string{node}, usages: peerClientUsage(), notAfter: now.Add(3 * 365 * day)},
			"etcd-serving-" + node: {commonName: "system:etcd-server:" + node, orgs: []string{"system:etcd-servers"},
				ips: []net.IP{ip}, dnsNames: []string{node, "localhost"}, usages: servingUsage(), notAfter: now.Add(3 * 365 * day)},
		}
		for name, spec := range pairs {
			kp, err := ca.issue(spec)
			if err != nil {
				return err
			}
			t.file(etcdCertsDir+"/secrets/etcd-all-certs/"+name+".crt", 0o600, kp.cert)
			t.file(etcdCertsDir+"/secrets/etcd-all-certs/"+name+".key", 0o600, kp.key)
		}
	}
	t.file(etcdCertsDir+"/configmaps/etcd-serving-ca/ca-bundle.crt", 0o644, ca.pem)
	t.file(etcdCertsDir+"/configmaps/etcd-peer-client-ca/ca-bundle.crt", 0o644, ca.pem)
	t.file(etcdCertsDir+"/configmaps/etcd-scripts/etcd.env", 0o644, etcdEnv(nodes, ips))

	c.EtcdEnv = t.path(etcdCertsDir + "/configmaps/etcd-scripts/etcd.env")
	c.CACert = t.path(etcdCertsDir + "/configmaps/etcd-serving-ca/ca-bundle.crt")
	c.Cert = t.path(etcdCertsDir + "/secrets/etcd-all-certs/etcd-peer-" + c.NodeName + ".crt")
	c.Key = t.path(etcdCertsDir + "/secrets/etcd-all-certs/etcd-peer-" + c.NodeName + ".key")
	c.servingCert = t.path(etcdCertsDir + "/secrets/etcd-all-certs/etcd-serving-" + c.NodeName + ".crt")
	c.servingKey = t.path(etcdCertsDir + "/secrets/etcd-all-certs/etcd-serving-" + c.NodeName + ".key")
	return t.err
}

// etcdEnv renders etcd.env as the cluster-etcd-operator writes it: sorted
// `export KEY="value"` lines, certificate paths under static-pod-certs with a
// literal NODE_NAME placeholder, and the local member listed between two
// others so that "take the first endpoint" is caught.
func etcdEnv(nodes, ips []string) []byte {
	order := []int{1, 0, 2}
	urls := make([]string, 0, len(order))
	for _, i := range order {
		urls = append(urls, "https://"+net.JoinHostPort(ips[i], "2379"))
	}
	const certs = "/etc/kubernetes/static-pod-certs"
	env := map[string]string{
		"ALL_ETCD_ENDPOINTS":         strings.Join(urls, ","),
		"ETCDCTL_API":                "3",
		"ETCDCTL_CACERT":             certs + "/configmaps/etcd-serving-ca/ca-bundle.crt",
		"ETCDCTL_CERT":               certs + "/secrets/etcd-all-certs/etcd-peer-NODE_NAME.crt",
		"ETCDCTL_KEY":                certs + "/secrets/etcd-all-certs/etcd-peer-NODE_NAME.key",
		"ETCDCTL_ENDPOINTS":          strings.Join(urls, ","),
		"ETCD_CIPHER_SUITES":         "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384,TLS_CHACHA20_POLY1305_SHA256",
		"ETCD_DATA_DIR":              "/var/lib/etcd",
		"ETCD_ELECTION_TIMEOUT":      "1000",
		"ETCD_ENABLE_PPROF":          "true",
		"ETCD_HEARTBEAT_INTERVAL":    "100",
		"ETCD_IMAGE":                 image("etcd"),
		"ETCD_INITIAL_CLUSTER_STATE": "existing",
		"ETCD_QUOTA_BACKEND_BYTES":   "8589934592",
		"ETCD_SOCKET_REUSE_ADDRESS":  "true",
	}
	for i, node := range nodes {
		prefix := "NODE_" + EnvName(node)
		env[prefix+"_ETCD_NAME"] = node
		env[prefix+"_ETCD_URL_HOST"] = ips[i]
		env[prefix+"_IP"] = ips[i]
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		fmt.Fprintf(&b, "export %s=\"%s\"\n", k, env[k])
	}
	return []byte(b.String())
}

// EnvName is how etcd.env spells a node name inside variable names.
func EnvName(node string) string {
	return strings.NewReplacer("-", "_", ".", "_").Replace(node)
}

// writeComponent writes the four revision directories of comp, its -certs
// directory and its manifest, then gives revision N+1 the newest mtime: a
// tool that picks the revision by mtime picks one that is not running.
func writeComponent(t *tree, ca *authority, comp component, now time.Time) error {
	n := comp.revision
	for rev := n - 2; rev <= n+1; rev++ {
		life := comp.certLife
		if rev != n {
			life = time.Duration(n+2-rev) * day
		}
		if err := writeRevision(t, ca, comp, rev, now.Add(life)); err != nil {
			return err
		}
	}
	manifest, err := json.Marshal(staticPodFor(comp, n))
	if err != nil {
		return fmt.Errorf("marshal %s manifest: %w", comp.name, err)
	}
	t.file("manifests/"+comp.name+"-pod.yaml", 0o644, manifest)
	t.file("static-pod-resources/"+comp.name+"-certs/configmaps/trusted-ca-bundle/ca-bundle.crt", 0o644, ca.pem)
	for rev := n - 2; rev <= n+1; rev++ {
		t.touch("static-pod-resources/"+revisionDir(comp.name, rev), now.Add(time.Duration(rev-n-1)*time.Hour))
	}
	return t.err
}

// writeRevision writes static-pod-resources/<c>-pod-<rev> with a serving
// certificate expiring at notAfter.
func writeRevision(t *tree, ca *authority, comp component, rev int, notAfter time.Time) error {
	dir := "static-pod-resources/" + revisionDir(comp.name, rev)
	manifest, err := json.Marshal(staticPodFor(comp, rev))
	if err != nil {
		return fmt.Errorf("marshal %s manifest: %w", comp.name, err)
	}
	serving, err := ca.issue(certSpec{commonName: comp.name + "." + comp.namespace + ".svc",
		dnsNames: []string{comp.name + "." + comp.namespace + ".svc"}, usages: servingUsage(), notAfter: notAfter})
	if err != nil {
		return err
	}
	t.file(dir+"/"+comp.name+"-pod.yaml", 0o644, manifest)
	t.file(dir+"/configmaps/"+comp.name+"-pod/pod.yaml", 0o644, manifest)
	t.file(dir+"/configmaps/"+comp.name+"-pod/version", 0o644, fmt.Appendf(nil, "%d", rev))
	t.file(dir+"/configmaps/config/config.yaml", 0o644, fmt.Appendf(nil, `{"apiVersion":"v1","kind":"Config","revision":%d}`+"\n", rev))
	t.file(dir+"/secrets/serving-cert/tls.crt", 0o600, serving.cert)
	t.file(dir+"/secrets/serving-cert/tls.key", 0o600, serving.key)
	t.file(dir+"/secrets/localhost-recovery-client-token/token", 0o600, []byte(rand.Text()))

	switch comp.name {
	case "etcd":
		t.file(dir+"/configmaps/etcd-scripts/etcd.sh", 0o755, []byte(etcdScript))
		t.symlink(dir+"/configmaps/etcd-scripts/etcd-latest.sh", "etcd.sh")
		t.file(dir+"/configmaps/etcd-serving-ca/ca-bundle.crt", 0o644, ca.pem)
	case "kube-apiserver":
		encryption, err := encryptionConfig()
		if err != nil {
			return err
		}
		t.file(dir+"/secrets/encryption-config/encryption-config", 0o600, encryption)
		t.file(dir+"/configmaps/kube-apiserver-server-ca/ca-bundle.crt", 0o644, slices.Concat(ca.pem, serving.cert))
		// An absolute link out of the tree: archiving must store it, never follow it.
		t.symlink(dir+"/configmaps/config/hostname", "/etc/hostname")
	}
	return t.err
}

// staticPodFor renders the manifest of comp at revision rev. The running
// revision is only in the resource-dir hostPath (and the revision label);
// kube-scheduler lists its -certs hostPath first so that taking the first
// static-pod-resources path is wrong.
func staticPodFor(comp component, rev int) pod {
	resources := hostPathVolume("resource-dir", hostResources+"/"+revisionDir(comp.name, rev))
	certs := hostPathVolume("cert-dir", hostResources+"/"+comp.name+"-certs")
	var vols []volume
	switch comp.name {
	case "etcd":
		vols = []volume{hostPathVolume("static-pod-dir", "/etc/kubernetes/manifests"), resources, certs,
			hostPathVolume("data-dir", "/var/lib/etcd"), hostPathVolume("log-dir", "/var/log/etcd"),
			hostPathVolume("usr-local-bin", "/usr/local/bin")}
	case "kube-apiserver":
		vols = []volume{resources, certs, hostPathVolume("audit-dir", "/var/log/kube-apiserver")}
	case "kube-scheduler":
		vols = []volume{certs, resources}
	default:
		vols = []volume{resources, certs}
	}
	labels := map[string]string{"app": comp.namespace, "revision": fmt.Sprint(rev)}
	return newStaticPod(comp.name, comp.namespace, image(comp.name), labels, vols, []string{"/bin/bash", "-euxo", "pipefail", "-c"})
}

func revisionDir(component string, rev int) string {
	return fmt.Sprintf("%s-pod-%d", component, rev)
}

// peerNodeNames returns two master names other than node.
func peerNodeNames(node string) []string {
	var peers []string
	for i := 0; len(peers) < 2; i++ {
		if n := fmt.Sprintf("master-%d.example.test", i); n != node {
			peers = append(peers, n)
		}
	}
	return peers
}

// otherLoopbackIP returns a random loopback IP not in taken. Nothing listens
// there, so a tool that dials it fails.
func otherLoopbackIP(taken []string) string {
	for {
		if ip := randomLoopbackIP(); !slices.Contains(taken, ip) {
			return ip
		}
	}
}

// image is a plausible release image pullspec, stable per name.
func image(name string) string {
	return fmt.Sprintf("registry.example/openshift-release-dev/ocp-v4.0-art-dev@sha256:%x", sha256.Sum256([]byte(name)))
}

func encryptionConfig() ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate encryption key: %w", err)
	}
	return fmt.Appendf(nil, `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources:
  - secrets
  - configmaps
  - routes.route.openshift.io
  - oauthaccesstokens.oauth.openshift.io
  - oauthauthorizetokens.oauth.openshift.io
  providers:
  - aescbc:
      keys:
      - name: "1"
        secret: %s
  - identity: {}
`, base64.StdEncoding.EncodeToString(key)), nil
}

const etcdScript = `#!/bin/bash
set -euo pipefail
. /etc/kubernetes/static-pod-certs/configmaps/etcd-scripts/etcd.env
exec etcd --name="${NODE_NAME}" --data-dir="${ETCD_DATA_DIR}"
`
