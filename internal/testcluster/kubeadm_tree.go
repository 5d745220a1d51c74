package testcluster

import (
	"fmt"
	"net"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"
)

const kubeadmPKI = "pki/etcd"

// writeKubeadmTree lays out HostRoot/etc/kubernetes as kubeadm does: certs in
// pki/etcd and YAML static pod manifests, no etcd.env and no
// static-pod-resources.
func (c *Cluster) writeKubeadmTree(now time.Time) error {
	t := &tree{root: filepath.Join(c.HostRoot, etcKubernetes)}
	ca, err := newAuthority("etcd-ca", now.Add(10*365*day))
	if err != nil {
		return err
	}
	c.ca = ca
	caKey, err := ca.keyPEM()
	if err != nil {
		return err
	}
	t.file(kubeadmPKI+"/ca.crt", 0o644, ca.pem)
	t.file(kubeadmPKI+"/ca.key", 0o600, caKey)

	ip := net.ParseIP(c.IP)
	leafs := []struct {
		file string
		spec certSpec
	}{
		{kubeadmPKI + "/server", certSpec{commonName: c.NodeName, ips: []net.IP{ip}, dnsNames: []string{c.NodeName, "localhost"}, usages: peerClientUsage()}},
		{kubeadmPKI + "/peer", certSpec{commonName: c.NodeName, ips: []net.IP{ip}, dnsNames: []string{c.NodeName}, usages: peerClientUsage()}},
		{kubeadmPKI + "/healthcheck-client", certSpec{commonName: "kube-etcd-healthcheck-client", usages: clientUsage()}},
		{"pki/apiserver-etcd-client", certSpec{commonName: "kube-apiserver-etcd-client", usages: clientUsage()}},
	}
	for _, l := range leafs {
		l.spec.notAfter = now.Add(365 * day)
		kp, err := ca.issue(l.spec)
		if err != nil {
			return err
		}
		t.file(l.file+".crt", 0o644, kp.cert)
		t.file(l.file+".key", 0o600, kp.key)
	}

	manifest, err := yaml.Marshal(kubeadmEtcdPod(c.NodeName, c.IP))
	if err != nil {
		return fmt.Errorf("marshal etcd manifest: %w", err)
	}
	t.file("manifests/etcd.yaml", 0o600, manifest)
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		p := newStaticPod(name, "kube-system", "registry.k8s.io/"+name+":v1.33.1",
			map[string]string{"component": name, "tier": "control-plane"},
			[]volume{{Name: "k8s-certs", HostPath: hostPath{Path: "/etc/kubernetes/pki", Type: "DirectoryOrCreate"}}},
			[]string{name})
		m, err := yaml.Marshal(p)
		if err != nil {
			return fmt.Errorf("marshal %s manifest: %w", name, err)
		}
		t.file("manifests/"+name+".yaml", 0o600, m)
	}

	c.CACert = t.path(kubeadmPKI + "/ca.crt")
	c.Cert = t.path(kubeadmPKI + "/healthcheck-client.crt")
	c.Key = t.path(kubeadmPKI + "/healthcheck-client.key")
	c.servingCert = t.path(kubeadmPKI + "/server.crt")
	c.servingKey = t.path(kubeadmPKI + "/server.key")
	return t.err
}

// kubeadmEtcdPod is kubeadm's etcd manifest, except that the member listens
// only on ip: the fixture cannot take 127.0.0.1:2379, which parallel tests
// would share.
func kubeadmEtcdPod(node, ip string) pod {
	client := "https://" + net.JoinHostPort(ip, "2379")
	peer := "https://" + net.JoinHostPort(ip, "2380")
	const pki = "/etc/kubernetes/pki/etcd"
	p := newStaticPod("etcd", "kube-system", "registry.k8s.io/etcd:3.5.21-0",
		map[string]string{"component": "etcd", "tier": "control-plane"},
		[]volume{
			{Name: "etcd-certs", HostPath: hostPath{Path: pki, Type: "DirectoryOrCreate"}},
			{Name: "etcd-data", HostPath: hostPath{Path: "/var/lib/etcd", Type: "DirectoryOrCreate"}},
		},
		[]string{
			"etcd",
			"--advertise-client-urls=" + client,
			"--cert-file=" + pki + "/server.crt",
			"--client-cert-auth=true",
			"--data-dir=/var/lib/etcd",
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=" + node + "=" + peer,
			"--key-file=" + pki + "/server.key",
			"--listen-client-urls=" + client,
			"--listen-metrics-urls=http://127.0.0.1:2381",
			"--listen-peer-urls=" + peer,
			"--name=" + node,
			"--peer-cert-file=" + pki + "/peer.crt",
			"--peer-client-cert-auth=true",
			"--peer-key-file=" + pki + "/peer.key",
			"--peer-trusted-ca-file=" + pki + "/ca.crt",
			"--snapshot-count=10000",
			"--trusted-ca-file=" + pki + "/ca.crt",
		})
	p.Metadata.Annotations = map[string]string{"kubeadm.kubernetes.io/etcd.advertise-client-urls": client}
	return p
}
