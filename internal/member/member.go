// Package member talks to exactly one etcd member: the local one.
//
// The client is pinned to a single endpoint and never syncs the member list,
// so a snapshot can only come from the member the caller named. TLS always
// verifies the server against the given CA, and gRPC never goes through an
// HTTP(S) proxy from the environment: a proxy on a control-plane node must
// not see etcd traffic, and a backup must not depend on one.
package member

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Config says how to reach the member.
type Config struct {
	Endpoint string // https://host:port
	CACert   string
	Cert     string
	Key      string
	// RequestTimeout bounds each unary request (Status, Get, ...).
	RequestTimeout time.Duration
}

// Member is a client of one etcd member.
type Member struct {
	cfg    Config
	tls    *tls.Config
	client *clientv3.Client
	// unreachable is why Dial could not reach the member; the first failed
	// request gives it as the cause instead of waiting for a second
	// connection attempt, later ones look afresh.
	mu          sync.Mutex
	unreachable error
}

// Dial checks the credentials, then makes one TLS connection to the member,
// so that a certificate that cannot work, or that the member refuses, is
// reported at once as ErrCredentials, not after the request deadline as a
// member that does not answer. A member that cannot be reached is no error
// here: the first request reports it with its cause.
func Dial(ctx context.Context, cfg Config) (*Member, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("no etcd endpoint")
	}
	if !strings.HasPrefix(cfg.Endpoint, "https://") {
		return nil, fmt.Errorf("etcd endpoint %q is not https: etcd on a control-plane node serves TLS only", cfg.Endpoint)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 15 * time.Second
	}
	if err := checkCredentials(cfg, time.Now()); err != nil {
		return nil, err
	}
	tlsInfo := transport.TLSInfo{CertFile: cfg.Cert, KeyFile: cfg.Key, TrustedCAFile: cfg.CACert}
	tlsConfig, err := tlsInfo.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load etcd client certificates (--cacert %s, --cert %s, --key %s): %w", cfg.CACert, cfg.Cert, cfg.Key, err)
	}
	m := &Member{cfg: cfg, tls: tlsConfig}
	err = m.probe(ctx)
	if errors.Is(err, ErrCredentials) {
		return nil, err
	}
	m.unreachable = err
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{cfg.Endpoint},
		TLS:         tlsConfig,
		DialTimeout: cfg.RequestTimeout,
		DialOptions: []grpc.DialOption{grpc.WithNoProxy()},
		// Snapshots are large; the stream itself is not size-limited, but
		// big Get responses (ClusterVersion) must not trip the default.
		MaxCallRecvMsgSize: 64 << 20,
		Logger:             zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("create etcd client for %s: %w", cfg.Endpoint, err)
	}
	m.client = c
	return m, nil
}

// Close releases the connection.
func (m *Member) Close() error { return m.client.Close() }

// Endpoint is the member's URL.
func (m *Member) Endpoint() string { return m.cfg.Endpoint }

// Status is what the member says about itself.
type Status struct {
	ID        uint64
	Name      string
	ClusterID uint64
	Version   string
	// StorageVersion is empty on servers older than 3.6.
	StorageVersion string
	DBSize         int64
	DBSizeInUse    int64
	RaftIndex      uint64
	RaftTerm       uint64
	Revision       int64
	IsLearner      bool
}

// Status asks the member for its status and its name. Both are answered
// by the member alone, without quorum: a cluster that lost quorum is when a
// backup of the surviving member matters most.
func (m *Member) Status(ctx context.Context) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	st, err := m.client.Status(ctx, m.cfg.Endpoint)
	if err != nil {
		return Status{}, m.describe("get status", err)
	}
	s := Status{
		ID:             st.Header.MemberId,
		ClusterID:      st.Header.ClusterId,
		Version:        st.Version,
		StorageVersion: st.StorageVersion,
		DBSize:         st.DbSize,
		DBSizeInUse:    st.DbSizeInUse,
		RaftIndex:      st.RaftIndex,
		RaftTerm:       st.RaftTerm,
		Revision:       st.Header.Revision,
		IsLearner:      st.IsLearner,
	}
	members, err := m.client.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return Status{}, m.describe("list members", err)
	}
	for _, mb := range members.Members {
		if mb.ID == s.ID {
			s.Name = mb.Name
		}
	}
	return s, nil
}

// Alarms returns the alarms active on the member with the given ID. Listing
// alarms goes through raft, so it fails where the cluster has no quorum.
func (m *Member) Alarms(ctx context.Context, id uint64) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	resp, err := m.client.AlarmList(ctx)
	if err != nil {
		return nil, m.describe("list alarms", err)
	}
	var alarms []string
	for _, a := range resp.Alarms {
		if a.MemberID == id && a.Alarm != pb.AlarmType_NONE {
			alarms = append(alarms, a.Alarm.String())
		}
	}
	return alarms, nil
}

// Get returns the value at key, or ok=false if there is none. It reads from
// this member alone (serializable), as a backup of this member should.
func (m *Member) Get(ctx context.Context, key string) (value []byte, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	resp, err := m.client.Get(ctx, key, clientv3.WithSerializable())
	if err != nil {
		return nil, false, m.describe("read "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	return resp.Kvs[0].Value, true, nil
}

// Snapshot is an open snapshot stream.
type Snapshot struct {
	io.ReadCloser
	// Revision is the store revision at the point of the snapshot.
	Revision int64
	// Version is the server version that produced it.
	Version string
}

// Snapshot opens the member's snapshot stream. The stream carries the
// database followed by its SHA-256; closing it early cancels the transfer.
func (m *Member) Snapshot(ctx context.Context) (*Snapshot, error) {
	resp, err := m.client.SnapshotWithVersion(ctx)
	if err != nil {
		return nil, m.describe("open snapshot stream", err)
	}
	return &Snapshot{ReadCloser: resp.Snapshot, Revision: resp.Header.GetRevision(), Version: resp.Version}, nil
}

// describe turns gRPC and TLS failures into a line an operator can act on.
// gRPC reports a member it cannot reach as a bare deadline, so the cause is
// found by connecting to the endpoint directly with the same TLS settings.
func (m *Member) describe(what string, err error) error {
	if !errors.Is(err, context.Canceled) {
		if cause := m.cause(); cause != nil {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
	}
	msg := err.Error()
	hint := ""
	switch {
	case errors.Is(err, ErrCredentials):
	case strings.Contains(msg, "certificate"), strings.Contains(msg, "tls:"), strings.Contains(msg, "x509"):
		hint = "; check --cacert, --cert and --key"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "connection refused"),
		strings.Contains(msg, "Unavailable"), strings.Contains(msg, "no route"):
		hint = "; is etcd running on this node and --endpoints right?"
	}
	return fmt.Errorf("etcd %s: %s: %w%s", m.cfg.Endpoint, what, err, hint)
}

// cause says why a request failed: what Dial found, once, or else what a
// new connection finds.
func (m *Member) cause() error {
	m.mu.Lock()
	err := m.unreachable
	m.unreachable = nil
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.probe(context.Background())
}

// probe makes one TLS connection to the member, as gRPC does, and waits for
// the member's first bytes. With TLS 1.3 the client's side of the handshake
// ends before the member has looked at the client certificate, so a refusal
// arrives as an alert on the first read; an etcd member that accepts sends
// its HTTP/2 settings unasked. A member that sends nothing within the
// request deadline is left for gRPC to judge.
func (m *Member) probe(ctx context.Context) error {
	u, err := url.Parse(m.cfg.Endpoint)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	cfg := m.tls.Clone()
	cfg.NextProtos = []string{"h2"}
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return m.handshakeError(err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetReadDeadline(deadline); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return nil
	}
	return m.handshakeError(err)
}

// handshakeError names the credential a TLS failure is about.
func (m *Member) handshakeError(err error) error {
	var (
		verify *tls.CertificateVerificationError
		op     *net.OpError
	)
	switch {
	case errors.As(err, &verify):
		return credentialsErr("etcd %s presents a serving certificate that the CA bundle %s does not vouch for: %w; give the bundle that signs it (--cacert)", m.cfg.Endpoint, m.cfg.CACert, verify.Err)
	case errors.As(err, &op) && op.Op == "remote error":
		return credentialsErr("etcd %s refused client certificate %s: %w%s", m.cfg.Endpoint, m.cfg.Cert, err, alertHint(op.Err.Error()))
	}
	return err
}

// alertHint says what the alert a member sent means for a client
// certificate that this node found valid and chained to the CA bundle.
func alertHint(alert string) string {
	switch {
	case strings.Contains(alert, "expired"):
		return "; it is valid by this node's clock: compare the member's clock, or renew the certificate"
	case strings.Contains(alert, "unknown certificate authority"), strings.Contains(alert, "bad certificate"):
		return "; the member does not trust the CA that issued it: give a certificate and key issued by the CA etcd trusts for clients (--cert, --key)"
	}
	return "; give a certificate and key the member accepts (--cert, --key)"
}
