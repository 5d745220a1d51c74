package discovery

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeEnv writes content as etcd.env under a new host root.
func writeEnv(t *testing.T, content string) string {
	t.Helper()
	root := t.TempDir()
	file := filepath.Join(root, filepath.FromSlash(EnvFile))
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return root
}

func golden(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/etcd.env")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDiscover(t *testing.T) {
	const certs = "/etc/kubernetes/static-pod-resources/etcd-certs"
	tests := []struct {
		name     string
		env      string
		node     string
		endpoint string
		cacert   string
		cert     string
		key      string
	}{
		{
			// ETCDCTL_ENDPOINTS lists master-1 first: it must not be used.
			name:     "golden",
			env:      golden(t),
			node:     "master-0.example.test",
			endpoint: "https://10.0.0.3:2379",
			cacert:   certs + "/configmaps/etcd-serving-ca/ca-bundle.crt",
			cert:     certs + "/secrets/etcd-all-certs/etcd-peer-master-0.example.test.crt",
			key:      certs + "/secrets/etcd-all-certs/etcd-peer-master-0.example.test.key",
		},
		{
			name:     "another member of the golden file",
			env:      golden(t),
			node:     "master-2.example.test",
			endpoint: "https://10.0.0.5:2379",
			cacert:   certs + "/configmaps/etcd-serving-ca/ca-bundle.crt",
			cert:     certs + "/secrets/etcd-all-certs/etcd-peer-master-2.example.test.crt",
			key:      certs + "/secrets/etcd-all-certs/etcd-peer-master-2.example.test.key",
		},
		{
			name: "shell placeholder, host paths, IPv6",
			env: `ETCDCTL_CACERT=/etc/kubernetes/static-pod-resources/etcd-certs/ca.crt
ETCDCTL_CERT="/etc/kubernetes/static-pod-resources/etcd-certs/peer-${NODE_NAME}.crt"
ETCDCTL_KEY='/etc/kubernetes/static-pod-resources/etcd-certs/peer-$NODE_NAME.key'
ETCDCTL_ENDPOINTS=https://[fd00::9]:2379
NODE_m_0_IP="fd00:0:0:0::3"
`,
			node:     "m-0",
			endpoint: "https://[fd00::3]:2379",
			cacert:   certs + "/ca.crt",
			cert:     certs + "/peer-m-0.crt",
			key:      certs + "/peer-m-0.key",
		},
		{
			name: "only the static-pod-certs directory itself is rewritten",
			env: `ETCDCTL_CACERT=/etc/kubernetes/static-pod-certs-old/ca.crt
ETCDCTL_CERT=/etc/kubernetes/static-pod-certs/./a/../peer.crt
ETCDCTL_KEY=/etc/pki/peer.key
NODE_node_a_b_IP=192.168.1.10
`,
			node:     "node-a.b",
			endpoint: "https://192.168.1.10:2379",
			cacert:   "/etc/kubernetes/static-pod-certs-old/ca.crt",
			cert:     certs + "/peer.crt",
			key:      "/etc/pki/peer.key",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := writeEnv(t, tt.env)
			got, err := Discover(root, tt.node)
			if err != nil {
				t.Fatal(err)
			}
			host := func(p string) string { return filepath.Join(root, p) }
			want := Member{Endpoint: tt.endpoint, CACert: host(tt.cacert), Cert: host(tt.cert), Key: host(tt.key)}
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestDiscoverErrors(t *testing.T) {
	const certsOK = "ETCDCTL_CACERT=/a\nETCDCTL_CERT=/b\nETCDCTL_KEY=/c\n"
	tests := []struct {
		name string
		env  string // "" means no etcd.env at all
		node string
		want []string
	}{
		{"missing file", "", "m0", []string{"etcd.env not found", "not an OpenShift master? pass --endpoints/--cacert/--cert/--key"}},
		{"empty node name", golden(t), "", []string{"set NODE_NAME or --node-name"}},
		{"node name with a slash", golden(t), "../../x", []string{`"../../x" is not a valid Kubernetes node name`}},
		{"unknown node", golden(t), "master-3", []string{
			"has no NODE_master_3_IP for node \"master-3\"",
			"it has NODE_master_0_example_test_IP, NODE_master_1_example_test_IP, NODE_master_2_example_test_IP",
		}},
		{"no node variables", certsOK, "m0", []string{"it has no NODE_*_IP variables"}},
		{"invalid IP", certsOK + "NODE_m0_IP=10.0.0.300", "m0", []string{`NODE_m0_IP="10.0.0.300"`, "not an IP address"}},
		{"hostname instead of IP", certsOK + "NODE_m0_IP=m0.example", "m0", []string{"not an IP address"}},
		{"missing cert", "ETCDCTL_CACERT=/a\nETCDCTL_KEY=/c\nNODE_m0_IP=10.0.0.1", "m0", []string{"sets no ETCDCTL_CERT"}},
		{"relative cert", "ETCDCTL_CACERT=a\nETCDCTL_CERT=/b\nETCDCTL_KEY=/c\nNODE_m0_IP=10.0.0.1", "m0", []string{`ETCDCTL_CACERT="a"`, "not an absolute path"}},
		{"malformed file", "export A=\"x", "m0", []string{"etcd.env: env file line 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.env != "" {
				root = writeEnv(t, tt.env)
			}
			_, err := Discover(root, tt.node)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestEnvVarName(t *testing.T) {
	for node, want := range map[string]string{
		"master-0":                 "NODE_master_0_IP",
		"ip-10-0-1-2.ec2.internal": "NODE_ip_10_0_1_2_ec2_internal_IP",
		"cp0":                      "NODE_cp0_IP",
	} {
		if got := EnvVarName(node); got != want {
			t.Errorf("EnvVarName(%q) = %q, want %q", node, got, want)
		}
	}
}
