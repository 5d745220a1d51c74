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
		{"neither layout", "", "m0", []string{"found neither ", "etcd.env (OpenShift) nor ", "etc/kubernetes/manifests/etcd.yaml (kubeadm)", "pass --endpoints/--cacert/--cert/--key"}},
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

// writeManifest writes content as kubeadm's etcd.yaml under root.
func writeManifest(t *testing.T, root, content string) {
	t.Helper()
	file := filepath.Join(root, filepath.FromSlash(KubeadmManifest))
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// etcdPodYAML is a kubeadm etcd manifest with the given annotation value
// (none if empty) and container command and args.
func etcdPodYAML(annotation string, command, args []string) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n")
	if annotation != "" {
		b.WriteString("  annotations:\n    kubeadm.kubernetes.io/etcd.advertise-client-urls: " + annotation + "\n")
	}
	b.WriteString("spec:\n  containers:\n  - name: etcd\n    command:\n")
	for _, c := range command {
		b.WriteString("    - " + c + "\n")
	}
	if len(args) > 0 {
		b.WriteString("    args:\n")
		for _, a := range args {
			b.WriteString("    - " + a + "\n")
		}
	}
	return b.String()
}

func TestDiscoverKubeadm(t *testing.T) {
	goldenYAML, err := os.ReadFile("testdata/etcd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		manifest string
		env      string // etcd.env beside the manifest; "" for none
		endpoint string
	}{
		{name: "golden", manifest: string(goldenYAML), endpoint: "https://192.168.56.10:2379"},
		{
			name:     "annotation wins over the command line",
			manifest: etcdPodYAML("https://10.1.0.1:2379", []string{"etcd", "--advertise-client-urls=https://10.1.0.2:2379"}, nil),
			endpoint: "https://10.1.0.1:2379",
		},
		{
			name:     "first https URL of several",
			manifest: etcdPodYAML(`"http://10.1.0.1:2379,https://[fd00::7]:2379,https://10.1.0.3:2379"`, nil, nil),
			endpoint: "https://[fd00::7]:2379",
		},
		{
			name:     "command line without the annotation",
			manifest: etcdPodYAML("", []string{"etcd", "--name=cp-0", "--advertise-client-urls=http://10.1.0.1:2379,https://10.1.0.2:2379/"}, nil),
			endpoint: "https://10.1.0.2:2379",
		},
		{
			name:     "args without the annotation",
			manifest: etcdPodYAML("", []string{"etcd"}, []string{"--advertise-client-urls=https://cp-0.example.test:2379"}),
			endpoint: "https://cp-0.example.test:2379",
		},
		{
			name:     "etcd.env wins where both exist",
			manifest: string(goldenYAML),
			env:      golden(t),
			endpoint: "https://10.0.0.3:2379",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.env != "" {
				root = writeEnv(t, tt.env)
			}
			writeManifest(t, root, tt.manifest)
			got, err := Discover(root, "master-0.example.test")
			if err != nil {
				t.Fatal(err)
			}
			if got.Endpoint != tt.endpoint {
				t.Errorf("endpoint %q, want %q", got.Endpoint, tt.endpoint)
			}
			if tt.env != "" {
				return
			}
			pki := filepath.Join(root, "etc", "kubernetes", "pki", "etcd")
			want := Member{
				Endpoint: tt.endpoint,
				CACert:   filepath.Join(pki, "ca.crt"),
				Cert:     filepath.Join(pki, "healthcheck-client.crt"),
				Key:      filepath.Join(pki, "healthcheck-client.key"),
			}
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
	t.Run("node name is not needed", func(t *testing.T) {
		root := t.TempDir()
		writeManifest(t, root, string(goldenYAML))
		if _, err := Discover(root, ""); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDiscoverKubeadmErrors(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		want     []string
	}{
		{"no URL anywhere", etcdPodYAML("", []string{"etcd", "--name=cp-0"}, nil), []string{
			"etcd.yaml: neither annotation kubeadm.kubernetes.io/etcd.advertise-client-urls nor --advertise-client-urls found; pass --endpoints",
		}},
		{"only http", etcdPodYAML("http://10.1.0.1:2379", nil, nil), []string{`annotation kubeadm.kubernetes.io/etcd.advertise-client-urls "http://10.1.0.1:2379" has no https URL`}},
		{"flag without https", etcdPodYAML("", []string{"etcd", "--advertise-client-urls=unix://etcd.sock"}, nil), []string{`--advertise-client-urls "unix://etcd.sock" has no https URL`}},
		{"URL with a path", etcdPodYAML("https://10.1.0.1:2379/v3", nil, nil), []string{"has no https URL"}},
		{"URL with credentials", etcdPodYAML("https://u:p@10.1.0.1:2379", nil, nil), []string{"has no https URL"}},
		{"not YAML", "spec: [", []string{"decode", "etcd.yaml"}},
		{"too large", strings.Repeat(" ", maxManifestSize+1), []string{"larger than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeManifest(t, root, tt.manifest)
			_, err := Discover(root, "")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tt.want, "discover etcd member: ") {
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
