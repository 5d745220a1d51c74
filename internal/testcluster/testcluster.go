// Package testcluster starts a real, single-member etcd with mutual TLS
// in-process and generates around it a host tree laid out like the
// /etc/kubernetes of an OpenShift master (or of a kubeadm node), so that
// etcd-backup's zero-config discovery, preflight checks and archiving run
// against it unchanged.
//
// The member listens on a random loopback address 127.x.y.z with the real
// client port 2379, because discovery reads only an IP from etcd.env and
// assumes that port. The etcd data directory lives beside the host tree, never
// inside it.
//
// It is an ordinary package so that tests of many packages, cmd/demo and the
// benchmarks share one fixture.
package testcluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Defaults applied to zero Options fields.
const (
	DefaultNodeName   = "master-0.example.test"
	DefaultVersion    = "4.18.12"
	DefaultClusterAge = 72 * time.Hour
)

// Platforms accepted in Options.Platform.
const (
	PlatformOpenShift  = "openshift"
	PlatformKubernetes = "kubernetes"
)

const (
	clientPort = 2379
	peerPort   = 2380
	// quotaBytes leaves room for the 1 GiB benchmark database.
	quotaBytes = 8 << 30
	// readyTimeout bounds the wait for the member to elect itself leader.
	readyTimeout = 60 * time.Second
	// addrAttempts bounds the retries when a random loopback address is taken.
	addrAttempts = 8
)

// Options shape the generated cluster. The zero value is a healthy,
// three-day-old OpenShift 4.18 master.
type Options struct {
	NodeName    string        // default DefaultNodeName
	Platform    string        // PlatformOpenShift (default) or PlatformKubernetes
	ClusterAge  time.Duration // age of the ClusterVersion's creationTimestamp; default DefaultClusterAge
	Version     string        // cluster version; default DefaultVersion
	Progressing []string      // ClusterOperator names seeded with Progressing=True
	Upgrading   bool          // ClusterVersion seeded mid-upgrade to the next z-stream
	Keys        int           // filler keys (about 1 KiB each) seeded under /kubernetes.io/configmaps/filler/
	Logger      *zap.Logger   // etcd server and client logs; default none (failures are returned as errors)
}

// Cluster is a running member and its host tree. Fields are read-only.
type Cluster struct {
	Dir      string // root of everything the fixture created
	HostRoot string // host root: the tree lives at HostRoot/etc/kubernetes
	NodeName string
	Platform string
	IP       string // loopback IP the member listens on
	Endpoint string // https://IP:2379

	// Absolute paths of the client credentials inside the host tree: the
	// etcd-certs files etcd.env points to (OpenShift) or the kubeadm
	// healthcheck-client pair (Kubernetes).
	CACert, Cert, Key string

	// OpenShift only.
	EtcdEnv              string         // absolute path of etcd-certs/configmaps/etcd-scripts/etcd.env
	OtherIPs             []string       // IPs of the two etcd.env members that do not exist
	ClusterID            string         // spec.clusterID of the seeded ClusterVersion
	Revisions            map[string]int // running static pod revision per component
	EncryptionConfig     string         // absolute path of the running kube-apiserver encryption config
	EarliestCertNotAfter time.Time      // earliest NotAfter among certificates in the running revision dirs
	EarliestCertPath     string         // its path relative to /etc/kubernetes, as named in the archive

	Etcd *embed.Etcd

	servingCert, servingKey string
	ca                      *authority       // signs the member's and the clients' certificates
	cli                     *clientv3.Client // the fixture's own, for seeding and the setters
	logger                  *zap.Logger
	stopOnce                sync.Once
	fillSeq                 atomic.Int64
}

// Start builds the host tree under dir and starts the member. ctx bounds the
// start-up and seeding only; the member runs until Stop.
func Start(ctx context.Context, dir string, opts Options) (*Cluster, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		ip, err := freeLoopbackIP()
		if err != nil {
			return nil, err
		}
		c, err := start(ctx, dir, ip, opts)
		if err == nil {
			return c, nil
		}
		// Another process may grab the address between the probe and the bind.
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == addrAttempts {
			return nil, err
		}
	}
}

// New starts a cluster in t.TempDir() and stops it when the test ends.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := Start(t.Context(), t.TempDir(), opts)
	if err != nil {
		t.Fatalf("start test cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// Client returns an mTLS client to the member using the host tree's client
// certificate. As with clientv3.Config.Context, ctx bounds the client's life.
func (c *Cluster) Client(ctx context.Context) (*clientv3.Client, error) {
	tlsCfg, err := transport.TLSInfo{
		CertFile:      c.Cert,
		KeyFile:       c.Key,
		TrustedCAFile: c.CACert,
	}.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load client TLS config: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{c.Endpoint},
		TLS:         tlsCfg,
		DialTimeout: 10 * time.Second,
		Context:     ctx,
		Logger:      c.logger,
		// The member is on loopback; a proxy from the environment must not matter.
		DialOptions: []grpc.DialOption{grpc.WithNoProxy()},
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.Endpoint, err)
	}
	return cli, nil
}

// Stop shuts the member down. It is safe to call more than once. The files
// stay; the caller owns Dir.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		if c.cli != nil {
			_ = c.cli.Close() // only reports the member going away
		}
		if c.Etcd != nil {
			c.Etcd.Close()
		}
	})
}

func (o Options) withDefaults() (Options, error) {
	if o.NodeName == "" {
		o.NodeName = DefaultNodeName
	}
	if o.Platform == "" {
		o.Platform = PlatformOpenShift
	}
	if o.Platform != PlatformOpenShift && o.Platform != PlatformKubernetes {
		return o, fmt.Errorf("testcluster: unknown platform %q (want %q or %q)", o.Platform, PlatformOpenShift, PlatformKubernetes)
	}
	if o.ClusterAge == 0 {
		o.ClusterAge = DefaultClusterAge
	}
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if o.Keys < 0 {
		return o, fmt.Errorf("testcluster: negative Keys %d", o.Keys)
	}
	return o, nil
}

// start makes one attempt on ip and removes what it created if it fails.
func start(ctx context.Context, dir, ip string, opts Options) (_ *Cluster, err error) {
	c := &Cluster{
		Dir:      dir,
		HostRoot: filepath.Join(dir, "host"),
		NodeName: opts.NodeName,
		Platform: opts.Platform,
		IP:       ip,
		Endpoint: fmt.Sprintf("https://%s", net.JoinHostPort(ip, fmt.Sprint(clientPort))),
		logger:   opts.Logger,
	}
	if c.logger == nil {
		c.logger = zap.NewNop()
	}
	dataDir := filepath.Join(dir, "etcd-data")
	defer func() {
		if err != nil {
			c.Stop()
			err = errors.Join(err, os.RemoveAll(c.HostRoot), os.RemoveAll(dataDir))
		}
	}()

	now := time.Now().UTC().Truncate(time.Second)
	if opts.Platform == PlatformOpenShift {
		err = c.writeOpenShiftTree(now)
	} else {
		err = c.writeKubeadmTree(now)
	}
	if err != nil {
		return nil, fmt.Errorf("write host tree: %w", err)
	}
	if err := c.startEtcd(ctx, dataDir); err != nil {
		return nil, err
	}
	if err := c.seed(ctx, opts, now); err != nil {
		return nil, fmt.Errorf("seed etcd: %w", err)
	}
	return c, nil
}

func (c *Cluster) startEtcd(ctx context.Context, dataDir string) error {
	cfg := embed.NewConfig()
	cfg.Name = c.NodeName
	cfg.Dir = dataDir
	clientURL := url.URL{Scheme: "https", Host: net.JoinHostPort(c.IP, fmt.Sprint(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort(c.IP, fmt.Sprint(peerPort))}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(c.NodeName)
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile:       c.servingCert,
		KeyFile:        c.servingKey,
		TrustedCAFile:  c.CACert,
		ClientCertAuth: true,
	}
	cfg.QuotaBackendBytes = quotaBytes
	// The data is throwaway; skipping fsync makes seeding and Fill fast
	// without changing what a snapshot streams.
	cfg.UnsafeNoFsync = true
	// Even at error level, embed logs every clean shutdown as a failure.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(c.logger)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd on %s: %w", c.IP, err)
	}
	c.Etcd = e

	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd on %s failed while starting: %w", c.IP, err)
	case <-ctx.Done():
		return fmt.Errorf("wait for etcd on %s to become ready: %w", c.IP, ctx.Err())
	}
}

// freeLoopbackIP picks a random 127.x.y.z (never 127.0.0.1, which real
// services use) whose client and peer ports are free. Linux routes all of
// 127/8 to lo, so no interface setup is needed.
func freeLoopbackIP() (string, error) {
	var lastErr error
	for range addrAttempts {
		ip := randomLoopbackIP()
		if err := probePorts(ip); err != nil {
			lastErr = err
			continue
		}
		return ip, nil
	}
	return "", fmt.Errorf("find a free loopback address for etcd: %w", lastErr)
}

func randomLoopbackIP() string {
	return fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), 1+rand.IntN(254), 1+rand.IntN(254))
}

func probePorts(ip string) error {
	for _, port := range []int{clientPort, peerPort} {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		if err := l.Close(); err != nil {
			return err
		}
	}
	return nil
}
