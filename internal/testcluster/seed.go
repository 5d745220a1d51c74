package testcluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	// FillerKeyPrefix holds the Options.Keys filler configmaps.
	FillerKeyPrefix = "/kubernetes.io/configmaps/filler/"
	fillKeyPrefix   = "/kubernetes.io/testcluster-fill/"

	// txnOps stays under etcd's default --max-txn-ops of 128.
	txnOps = 100
	// fillValueSize and fillValuesPerTxn keep a Fill request near 1 MiB,
	// under the default 1.5 MiB request limit.
	fillValueSize    = 256 << 10
	fillValuesPerTxn = 4
	fillWorkers      = 4
)

type kv struct {
	key   string
	value []byte
}

// seed writes the content every cluster has, then the OpenShift objects.
func (c *Cluster) seed(ctx context.Context, opts Options, now time.Time) error {
	cli, err := c.Client(context.Background())
	if err != nil {
		return err
	}
	c.cli = cli
	if err := putAll(ctx, cli, baseObjects(opts.Platform)); err != nil {
		return err
	}
	if err := putAll(ctx, cli, fillerObjects(opts.Keys)); err != nil {
		return err
	}
	if opts.Platform != PlatformOpenShift {
		return nil
	}
	return c.seedOpenShift(ctx, opts, now)
}

// baseObjects are a few namespaces and secrets. Built-in resources are stored
// as protobuf; with OpenShift's encryption at rest, secrets are aescbc blobs.
func baseObjects(platform string) []kv {
	namespaces := []string{"default", "kube-system", "kube-public"}
	if platform == PlatformOpenShift {
		namespaces = append(namespaces, "openshift-etcd", "openshift-kube-apiserver", "openshift-config")
	}
	var kvs []kv
	for _, ns := range namespaces {
		kvs = append(kvs, kv{"/kubernetes.io/namespaces/" + ns, k8sProto("Namespace", []byte(ns))})
		secret := k8sProto("Secret", []byte(ns+"/default-token"))
		if platform == PlatformOpenShift {
			secret = append([]byte("k8s:enc:aescbc:v1:1:"), randomBytes(96)...)
		}
		kvs = append(kvs, kv{"/kubernetes.io/secrets/" + ns + "/default-token", secret})
	}
	return kvs
}

// fillerObjects are n configmaps of about 1 KiB.
func fillerObjects(n int) []kv {
	payload := randomBytes(1000)
	kvs := make([]kv, n)
	for i := range kvs {
		kvs[i] = kv{fmt.Sprintf("%s%08d", FillerKeyPrefix, i), k8sProto("ConfigMap", payload)}
	}
	return kvs
}

// k8sProto wraps raw in the envelope the kube-apiserver's protobuf storage
// uses: the "k8s\x00" magic, then a runtime.Unknown with its TypeMeta.
func k8sProto(kind string, raw []byte) []byte {
	var typeMeta []byte
	typeMeta = protowire.AppendTag(typeMeta, 1, protowire.BytesType)
	typeMeta = protowire.AppendString(typeMeta, "v1")
	typeMeta = protowire.AppendTag(typeMeta, 2, protowire.BytesType)
	typeMeta = protowire.AppendString(typeMeta, kind)

	b := []byte("k8s\x00")
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, typeMeta)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendBytes(b, raw)
}

// putAll writes kvs in transactions of txnOps puts.
func putAll(ctx context.Context, cli *clientv3.Client, kvs []kv) error {
	for start := 0; start < len(kvs); start += txnOps {
		batch := kvs[start:min(start+txnOps, len(kvs))]
		ops := make([]clientv3.Op, len(batch))
		for i, e := range batch {
			ops[i] = clientv3.OpPut(e.key, string(e.value))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("put %d keys from %s: %w", len(batch), batch[0].key, err)
		}
	}
	return nil
}

// Fill grows the member's database to at least size bytes, as reported by
// Status, with incompressible 256 KiB values written by concurrent batched
// transactions. Calling it again with a larger size grows the database further.
func (c *Cluster) Fill(ctx context.Context, size int64) error {
	for {
		st, err := c.cli.Status(ctx, c.Endpoint)
		if err != nil {
			return fmt.Errorf("read database size: %w", err)
		}
		if st.DbSize >= size {
			return nil
		}
		txns := (size - st.DbSize + fillValueSize*fillValuesPerTxn - 1) / (fillValueSize * fillValuesPerTxn)
		if err := c.fillTxns(ctx, txns); err != nil {
			return err
		}
	}
}

// fillTxns commits n transactions of fresh keys spread over fillWorkers.
func (c *Cluster) fillTxns(ctx context.Context, n int64) error {
	g, ctx := errgroup.WithContext(ctx)
	work := make(chan struct{})
	for range fillWorkers {
		g.Go(func() error {
			value := randomBytes(fillValueSize)
			for range work {
				ops := make([]clientv3.Op, fillValuesPerTxn)
				for i := range ops {
					seq := c.fillSeq.Add(1)
					// Distinct leading bytes keep each value distinct.
					binary.BigEndian.PutUint64(value, uint64(seq))
					ops[i] = clientv3.OpPut(fmt.Sprintf("%s%012d", fillKeyPrefix, seq), string(value))
				}
				if _, err := c.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					return fmt.Errorf("fill database: %w", err)
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		for range n {
			select {
			case work <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}

// RaiseAlarm activates a NOSPACE alarm on the member, as etcd does itself
// when the backend quota is exceeded. clientv3 exposes only list and disarm,
// so this goes through the raw Maintenance API.
func (c *Cluster) RaiseAlarm(ctx context.Context) error {
	_, err := pb.NewMaintenanceClient(c.cli.ActiveConnection()).Alarm(ctx, &pb.AlarmRequest{
		Action:   pb.AlarmRequest_ACTIVATE,
		MemberID: uint64(c.Etcd.Server.MemberID()),
		Alarm:    pb.AlarmType_NOSPACE,
	})
	if err != nil {
		return fmt.Errorf("raise NOSPACE alarm: %w", err)
	}
	return nil
}

// DisarmAlarms clears every active alarm on the member.
func (c *Cluster) DisarmAlarms(ctx context.Context) error {
	if _, err := c.cli.AlarmDisarm(ctx, &clientv3.AlarmMember{}); err != nil {
		return fmt.Errorf("disarm alarms: %w", err)
	}
	return nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return b
}
