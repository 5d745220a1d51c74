package testcluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"sigs.k8s.io/yaml"
)

func TestOpenShift(t *testing.T) {
	const keys = 150
	c := New(t, Options{Keys: keys})
	ctx := t.Context()
	cli, err := c.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	t.Run("address", func(t *testing.T) {
		ip := net.ParseIP(c.IP)
		if ip == nil || !ip.IsLoopback() || c.IP == "127.0.0.1" {
			t.Errorf("IP = %q, want a loopback address other than 127.0.0.1", c.IP)
		}
		if want := "https://" + c.IP + ":2379"; c.Endpoint != want {
			t.Errorf("Endpoint = %q, want %q", c.Endpoint, want)
		}
	})

	t.Run("mTLS get of seeded objects", func(t *testing.T) {
		var cv clusterVersion
		getJSON(t, cli, ClusterVersionKey, &cv)
		if cv.Spec.ClusterID == "" || cv.Spec.ClusterID != c.ClusterID {
			t.Errorf("clusterID = %q, want %q", cv.Spec.ClusterID, c.ClusterID)
		}
		if cv.Status.Desired.Version != DefaultVersion || cv.Status.History[0].State != "Completed" {
			t.Errorf("desired %q, history[0] %+v; want %s Completed", cv.Status.Desired.Version, cv.Status.History[0], DefaultVersion)
		}
		created, err := time.Parse(time.RFC3339, cv.Metadata.CreationTimestamp)
		if age := time.Since(created); err != nil || age < DefaultClusterAge || age > DefaultClusterAge+time.Minute {
			t.Errorf("creationTimestamp %q (%v): age %v, want about %v", cv.Metadata.CreationTimestamp, err, age, DefaultClusterAge)
		}
		for _, op := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
			if got := operatorCondition(t, cli, op, "Progressing"); got != "False" {
				t.Errorf("%s Progressing = %q, want False", op, got)
			}
		}
		resp, err := cli.Get(ctx, FillerKeyPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != keys {
			t.Errorf("filler keys: %v, %v; want %d", resp, err, keys)
		}
	})

	t.Run("client without certificate is refused", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(readFile(t, c.CACert))
		conn, err := tls.Dial("tcp", net.JoinHostPort(c.IP, "2379"), &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
		if err == nil {
			defer conn.Close()
			// With TLS 1.3 the server's refusal arrives after the client's handshake.
			_, err = conn.Read(make([]byte, 1))
		}
		if err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Errorf("connecting without a client certificate: %v, want a certificate required alert", err)
		}
	})

	t.Run("host tree", func(t *testing.T) { checkOpenShiftTree(t, c) })
	t.Run("etcd.env", func(t *testing.T) { checkEtcdEnv(t, c) })
	t.Run("earliest certificate", func(t *testing.T) { checkEarliestCert(t, c) })

	t.Run("SetProgressing", func(t *testing.T) {
		for _, want := range []bool{true, false} {
			if err := c.SetProgressing(ctx, "kube-apiserver", want); err != nil {
				t.Fatal(err)
			}
			if got := operatorCondition(t, cli, "kube-apiserver", "Progressing"); got != boolStatus(want) {
				t.Errorf("after SetProgressing(%v): %q", want, got)
			}
		}
		if err := c.SetProgressing(ctx, "no-such-operator", true); err == nil {
			t.Error("SetProgressing of a missing operator succeeded")
		}
	})

	t.Run("upgrade", func(t *testing.T) {
		target := NextVersion(DefaultVersion)
		if err := c.SetUpgrading(ctx, target); err != nil {
			t.Fatal(err)
		}
		checkUpgrade(t, cli, target, "Partial", "True")
		if err := c.SetUpgrading(ctx, target); err == nil {
			t.Error("second SetUpgrading succeeded")
		}
		if err := c.CompleteUpgrade(ctx); err != nil {
			t.Fatal(err)
		}
		checkUpgrade(t, cli, target, "Completed", "False")
		var co clusterOperator
		getJSON(t, cli, ClusterOperatorKeyPrefix+"etcd", &co)
		if co.Status.Versions[0].Version != target {
			t.Errorf("etcd operator versions %+v, want %s", co.Status.Versions, target)
		}
	})

	t.Run("alarm", func(t *testing.T) {
		if err := c.RaiseAlarm(ctx); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.AlarmList(ctx)
		if err != nil || len(resp.Alarms) != 1 || resp.Alarms[0].Alarm.String() != "NOSPACE" {
			t.Fatalf("AlarmList after RaiseAlarm: %v, %v", resp, err)
		}
		if err := c.DisarmAlarms(ctx); err != nil {
			t.Fatal(err)
		}
		if resp, err := cli.AlarmList(ctx); err != nil || len(resp.Alarms) != 0 {
			t.Fatalf("AlarmList after DisarmAlarms: %v, %v", resp, err)
		}
	})

	t.Run("Fill", func(t *testing.T) {
		st, err := cli.Status(ctx, c.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		want := st.DbSize + 8<<20
		if err := c.Fill(ctx, want); err != nil {
			t.Fatal(err)
		}
		if st, err = cli.Status(ctx, c.Endpoint); err != nil || st.DbSize < want {
			t.Fatalf("DbSize after Fill(%d): %v, %v", want, st.DbSize, err)
		}
	})

	t.Run("Stop is idempotent", func(t *testing.T) {
		c.Stop()
		c.Stop()
		select {
		case <-c.Etcd.Server.StopNotify():
		default:
			t.Error("member still running after Stop")
		}
	})
}

func TestSeededStates(t *testing.T) {
	const node = "ctrl-1.lab.test"
	c := New(t, Options{NodeName: node, ClusterAge: 2 * time.Hour, Version: "4.16.3",
		Progressing: []string{"kube-scheduler", "machine-config"}, Upgrading: true})
	cli, err := c.Client(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	checkUpgrade(t, cli, "4.16.4", "Partial", "True")
	for op, want := range map[string]string{"kube-scheduler": "True", "machine-config": "True", "etcd": "False"} {
		if got := operatorCondition(t, cli, op, "Progressing"); got != want {
			t.Errorf("%s Progressing = %q, want %q", op, got, want)
		}
	}
	var cv clusterVersion
	getJSON(t, cli, ClusterVersionKey, &cv)
	if created, _ := time.Parse(time.RFC3339, cv.Metadata.CreationTimestamp); time.Since(created) > 3*time.Hour {
		t.Errorf("creationTimestamp %s, want about 2h ago", cv.Metadata.CreationTimestamp)
	}
	env := parseEnv(t, c.EtcdEnv)
	if got := env["NODE_ctrl_1_lab_test_IP"]; got != c.IP {
		t.Errorf("NODE_ctrl_1_lab_test_IP = %q, want %q", got, c.IP)
	}
	if !strings.HasSuffix(c.Cert, "etcd-peer-"+node+".crt") {
		t.Errorf("Cert = %q, want the peer certificate of %s", c.Cert, node)
	}
}

func TestKubernetes(t *testing.T) {
	c := New(t, Options{Platform: PlatformKubernetes, Keys: 10})
	ctx := t.Context()
	cli, err := c.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	resp, err := cli.Get(ctx, "/kubernetes.io/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count == 0 {
		t.Fatalf("count of /kubernetes.io/ keys: %v, %v", resp, err)
	}
	resp, err = cli.Get(ctx, "/kubernetes.io/config.openshift.io/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("OpenShift keys on kubernetes: %v, %v", resp, err)
	}
	if c.ClusterID != "" || c.Revisions != nil || c.EtcdEnv != "" {
		t.Errorf("OpenShift fields set: %q %v %q", c.ClusterID, c.Revisions, c.EtcdEnv)
	}

	kube := filepath.Join(c.HostRoot, "etc/kubernetes")
	for _, missing := range []string{"static-pod-resources", "manifests/etcd-pod.yaml"} {
		if _, err := os.Lstat(filepath.Join(kube, missing)); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want not to exist", missing, err)
		}
	}
	if want := filepath.Join(kube, "pki/etcd/healthcheck-client.crt"); c.Cert != want {
		t.Errorf("Cert = %q, want %q", c.Cert, want)
	}
	var p pod
	if err := yaml.Unmarshal(readFile(t, filepath.Join(kube, "manifests/etcd.yaml")), &p); err != nil {
		t.Fatal(err)
	}
	if got := p.Metadata.Annotations["kubeadm.kubernetes.io/etcd.advertise-client-urls"]; got != c.Endpoint {
		t.Errorf("advertise-client-urls annotation = %q, want %q", got, c.Endpoint)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"unknown platform": {Platform: "nomad"},
		"negative keys":    {Keys: -1},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if c, err := Start(t.Context(), dir, opts); err == nil {
				c.Stop()
				t.Fatal("Start succeeded")
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("Start left %d entries in dir", len(entries))
			}
		})
	}
}

func TestNextVersion(t *testing.T) {
	for in, want := range map[string]string{"4.18.12": "4.18.13", "4.19.0": "4.19.1", "4": "4.1", "4.x": "4.x.1"} {
		if got := NextVersion(in); got != want {
			t.Errorf("NextVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func checkOpenShiftTree(t *testing.T, c *Cluster) {
	kube := filepath.Join(c.HostRoot, "etc/kubernetes")
	res := filepath.Join(kube, "static-pod-resources")
	for comp, n := range c.Revisions {
		manifest := readFile(t, filepath.Join(kube, "manifests", comp+"-pod.yaml"))
		if strings.Count(string(manifest), "\n") != 0 {
			t.Errorf("%s manifest is not one line", comp)
		}
		var p pod
		if err := json.Unmarshal(manifest, &p); err != nil {
			t.Fatalf("%s manifest: %v", comp, err)
		}
		running := "/etc/kubernetes/static-pod-resources/" + revisionDir(comp, n)
		if !hasHostPath(p, running) {
			t.Errorf("%s manifest volumes %+v lack %s", comp, p.Spec.Volumes, running)
		}
		newest := stat(t, filepath.Join(res, revisionDir(comp, n+1))).ModTime()
		for rev := n - 2; rev <= n; rev++ {
			if mt := stat(t, filepath.Join(res, revisionDir(comp, rev))).ModTime(); !mt.Before(newest) {
				t.Errorf("%s: mtime %v not older than revision %d's %v", revisionDir(comp, rev), mt, n+1, newest)
			}
		}
	}

	etcdRev := filepath.Join(res, revisionDir("etcd", c.Revisions["etcd"]))
	kasRev := filepath.Join(res, revisionDir("kube-apiserver", c.Revisions["kube-apiserver"]))
	for _, tc := range []struct {
		path string
		mode fs.FileMode
	}{
		{filepath.Join(etcdRev, "configmaps/etcd-scripts/etcd.sh"), 0o755},
		{filepath.Join(etcdRev, "configmaps/etcd-scripts/etcd-latest.sh"), fs.ModeSymlink},
		{filepath.Join(kasRev, "configmaps/config/hostname"), fs.ModeSymlink},
		{filepath.Join(kasRev, "configmaps/config/config.yaml"), 0o644},
		{c.EncryptionConfig, 0o600},
		{c.Key, 0o600},
		{c.EtcdEnv, 0o644},
	} {
		fi, err := os.Lstat(tc.path)
		if err != nil {
			t.Error(err)
			continue
		}
		got := fi.Mode().Perm()
		if tc.mode == fs.ModeSymlink {
			got = fi.Mode().Type()
		}
		if got != tc.mode {
			t.Errorf("%s: mode %v, want %v", tc.path, got, tc.mode)
		}
	}
	if target, err := os.Readlink(filepath.Join(kasRev, "configmaps/config/hostname")); err != nil || target != "/etc/hostname" {
		t.Errorf("outside link -> %q, %v", target, err)
	}
	if enc := string(readFile(t, c.EncryptionConfig)); !strings.Contains(enc, "kind: EncryptionConfiguration") || !strings.Contains(enc, "aescbc:") {
		t.Errorf("encryption config:\n%s", enc)
	}
	if _, err := os.Lstat(filepath.Join(kube, "static-pod-certs")); !os.IsNotExist(err) {
		t.Errorf("static-pod-certs exists on the host: %v", err)
	}
	for _, p := range []string{c.CACert, c.Cert, c.Key, c.EtcdEnv, c.EncryptionConfig} {
		if !strings.HasPrefix(p, kube+"/") {
			t.Errorf("%s is outside the host tree", p)
		}
	}
}

func checkEtcdEnv(t *testing.T, c *Cluster) {
	env := parseEnv(t, c.EtcdEnv)
	if got := env["NODE_"+EnvName(c.NodeName)+"_IP"]; got != c.IP {
		t.Errorf("local IP = %q, want %q", got, c.IP)
	}
	resolve := strings.NewReplacer("/etc/kubernetes/static-pod-certs", filepath.Join(c.HostRoot, "etc/kubernetes/static-pod-resources/etcd-certs"),
		"NODE_NAME", c.NodeName)
	for key, want := range map[string]string{"ETCDCTL_CACERT": c.CACert, "ETCDCTL_CERT": c.Cert, "ETCDCTL_KEY": c.Key} {
		if got := resolve.Replace(env[key]); got != want {
			t.Errorf("%s resolves to %q, want %q", key, got, want)
		}
	}
	if !strings.Contains(env["ETCDCTL_CERT"], "etcd-peer-NODE_NAME.crt") {
		t.Errorf("ETCDCTL_CERT = %q, want the literal NODE_NAME placeholder", env["ETCDCTL_CERT"])
	}
	endpoints := strings.Split(env["ETCDCTL_ENDPOINTS"], ",")
	if len(endpoints) != 3 || endpoints[0] == c.Endpoint || !strings.Contains(env["ETCDCTL_ENDPOINTS"], c.Endpoint) {
		t.Errorf("ETCDCTL_ENDPOINTS = %v, want three with %s not first", endpoints, c.Endpoint)
	}
	for _, ip := range c.OtherIPs {
		if ip == c.IP || !strings.Contains(env["ETCDCTL_ENDPOINTS"], ip) {
			t.Errorf("other member %s: not distinct or not listed", ip)
		}
	}
}

// checkEarliestCert scans the running revision directories, the content of
// the archive, and expects the advertised earliest expiry.
func checkEarliestCert(t *testing.T, c *Cluster) {
	kube := filepath.Join(c.HostRoot, "etc/kubernetes")
	var earliest time.Time
	var earliestPath string
	for comp, n := range c.Revisions {
		root := filepath.Join(kube, "static-pod-resources", revisionDir(comp, n))
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || !strings.HasSuffix(path, ".crt") {
				return err
			}
			for rest := readFile(t, path); ; {
				var block *pem.Block
				if block, rest = pem.Decode(rest); block == nil {
					break
				}
				cert, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return err
				}
				if earliest.IsZero() || cert.NotAfter.Before(earliest) {
					earliest, earliestPath = cert.NotAfter, path
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !earliest.Equal(c.EarliestCertNotAfter) || earliestPath != filepath.Join(kube, c.EarliestCertPath) {
		t.Errorf("earliest certificate %s at %s, want %s at %s", earliest, earliestPath, c.EarliestCertNotAfter, c.EarliestCertPath)
	}
}

func checkUpgrade(t *testing.T, cli *clientv3.Client, target, state, progressing string) {
	t.Helper()
	var cv clusterVersion
	getJSON(t, cli, ClusterVersionKey, &cv)
	h := cv.Status.History
	if len(h) < 2 || h[0].Version != target || h[0].State != state || cv.Status.Desired.Version != target {
		t.Errorf("history %+v, desired %s; want %s %s on top", h, cv.Status.Desired.Version, state, target)
	}
	if got := conditionStatus(cv.Status.Conditions, "Progressing"); got != progressing {
		t.Errorf("ClusterVersion Progressing = %q, want %q", got, progressing)
	}
}

func operatorCondition(t *testing.T, cli *clientv3.Client, name, typ string) string {
	t.Helper()
	var co clusterOperator
	getJSON(t, cli, ClusterOperatorKeyPrefix+name, &co)
	return conditionStatus(co.Status.Conditions, typ)
}

func conditionStatus(conds []condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

func getJSON(t *testing.T, cli *clientv3.Client, key string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %d keys", key, len(resp.Kvs))
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		t.Fatalf("decode %s: %v", key, err)
	}
}

func parseEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(readFile(t, path))))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if !ok || !strings.HasPrefix(sc.Text(), "export ") {
			t.Fatalf("%s: bad line %q", path, sc.Text())
		}
		env[k] = strings.Trim(v, `"`)
	}
	return env
}

func hasHostPath(p pod, path string) bool {
	for _, v := range p.Spec.Volumes {
		if v.HostPath.Path == path {
			return true
		}
	}
	return false
}

func boolStatus(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func stat(t *testing.T, path string) fs.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}
