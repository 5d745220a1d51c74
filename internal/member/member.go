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
}

// Dial prepares a client; it does not wait for a connection, so an
// unreachable member is reported by the first request with its cause.
func Dial(cfg Config) (*Member, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("no etcd endpoint")
	}
	if !strings.HasPrefix(cfg.Endpoint, "https://") {
		return nil, fmt.Errorf("etcd endpoint %q is not https: etcd on a control-plane node serves TLS only", cfg.Endpoint)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 15 * time.Second
	}
	tlsInfo := transport.TLSInfo{CertFile: cfg.Cert, KeyFile: cfg.Key, TrustedCAFile: cfg.CACert}
	tlsConfig, err := tlsInfo.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load etcd client certificates (--cacert %s, --cert %s, --key %s): %w", cfg.CACert, cfg.Cert, cfg.Key, err)
	}
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
	return &Member{cfg: cfg, tls: tlsConfig, client: c}, nil
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
// found by dialling the endpoint directly with the same TLS settings.
func (m *Member) describe(what string, err error) error {
	if !errors.Is(err, context.Canceled) {
		if cause := m.probe(); cause != nil {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
	}
	msg := err.Error()
	hint := ""
	switch {
	case strings.Contains(msg, "certificate"), strings.Contains(msg, "tls:"), strings.Contains(msg, "x509"):
		hint = "; check --cacert, --cert and --key"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "connection refused"),
		strings.Contains(msg, "Unavailable"), strings.Contains(msg, "no route"):
		hint = "; is etcd running on this node and --endpoints right?"
	}
	return fmt.Errorf("etcd %s: %s: %w%s", m.cfg.Endpoint, what, err, hint)
}

// probe makes one TLS handshake with the member and returns what went wrong.
func (m *Member) probe() error {
	u, err := url.Parse(m.cfg.Endpoint)
	if err != nil {
		return err
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: m.cfg.RequestTimeout}, Config: m.tls.Clone()}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.RequestTimeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	return conn.Close()
}
