package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// contender is one of the ways of taking a backup that are compared.
type contender int

const (
	ourSave contender = iota
	bareEtcdctl
	scriptPipeline
	contenders
)

func (c contender) String() string {
	return [...]string{"etcd-backup save", "etcdctl snapshot save", "script pipeline"}[c]
}

// sizeResult is everything measured at one database size.
type sizeResult struct {
	target   int64 // the size asked for
	dbSize   int64 // the member's DB size after filling
	snapSize int64 // bytes of one snapshot file, trailer included
	runs     [contenders][]usage
	phases   []savePhases  // one per measured save
	stream   streamEnd     // from one extra, finely logged save
	upload   *uploadResult // nil when the binary has no upload command
}

// outcome is one finished run of a contender.
type outcome struct {
	usage
	snapshot string // path of the snapshot it wrote
	snapSize int64
	log      []byte // its output
}

// runner runs the contenders against one cluster, each in a fresh directory
// that is removed afterwards, so disk use stays at one snapshot.
type runner struct {
	c       *testcluster.Cluster
	cli     *clientv3.Client
	tools   etcdTools
	emu     *emulator // nil: no upload rows
	reg     *ocitest.Registry
	bin     string
	scratch string
	seq     int
	env     []string // the whole environment of every child: nothing leaks in
	// heapKept is set while the upload rows keep this process's heap.
	heapKept bool
	tarDirs  []string // the running revision directories, relative to /etc/kubernetes
}

func newRunner(ctx context.Context, c *testcluster.Cluster, tools etcdTools, bin, scratch string) (*runner, error) {
	cli, err := c.Client(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(scratch, 0o700); err != nil {
		cli.Close()
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	r := &runner{c: c, cli: cli, tools: tools, bin: bin, scratch: scratch, env: []string{"PATH=" + os.Getenv("PATH")}}
	// cluster-backup.sh archives these four, in this order.
	for _, comp := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"} {
		rev, ok := c.Revisions[comp]
		if !ok {
			cli.Close()
			return nil, fmt.Errorf("test cluster has no running %s revision", comp)
		}
		r.tarDirs = append(r.tarDirs, fmt.Sprintf("static-pod-resources/%s-pod-%d", comp, rev))
	}
	return r, nil
}

func (r *runner) close() { r.cli.Close() }

// benchSize fills the member to size, warms every contender up once, then
// runs them in turn, runs times each, so that drift in the machine's load
// falls on all of them alike.
func (r *runner) benchSize(ctx context.Context, size int64, runs int) (sizeResult, error) {
	res := sizeResult{target: size}
	logf("filling etcd to %s", mib(size))
	start := time.Now()
	if err := r.c.Fill(ctx, size); err != nil {
		return res, err
	}
	st, err := r.cli.Status(ctx, r.c.Endpoint)
	if err != nil {
		return res, fmt.Errorf("read database size: %w", err)
	}
	res.dbSize = st.DbSize
	logf("database is %s (filled in %s)", mib(res.dbSize), time.Since(start).Round(time.Second))

	for round := range runs + 1 {
		for c := range contenders {
			if round == 0 {
				logf("%s %s: warm-up", mib(size), c)
			} else {
				logf("%s %s: run %d of %d", mib(size), c, round, runs)
			}
			o, err := r.runOnce(ctx, c, nil)
			if err != nil {
				return res, err
			}
			if round == 0 {
				continue
			}
			res.runs[c] = append(res.runs[c], o.usage)
			res.snapSize = o.snapSize
			if c == ourSave {
				res.phases = append(res.phases, parsePhases(o.log, o.start, o.start.Add(o.wall)))
			}
		}
	}
	logf("%s %s: one more run with progress logged every %s, to time the stream", mib(size), ourSave, diagInterval)
	o, err := r.runOnce(ctx, ourSave, []string{"--progress-interval", diagInterval.String()})
	if err != nil {
		return res, err
	}
	res.stream = parseStreamEnd(o.log, o.start, o.snapSize)
	res.stream.anonAt = o.anonAt
	return res, nil
}

// runOnce runs c in a fresh directory, records the snapshot size and removes
// the directory.
func (r *runner) runOnce(ctx context.Context, c contender, extra []string) (outcome, error) {
	r.seq++
	dir := filepath.Join(r.scratch, strconv.Itoa(r.seq))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return outcome{}, fmt.Errorf("create run directory: %w", err)
	}
	defer os.RemoveAll(dir)
	var o outcome
	var err error
	switch c {
	case ourSave:
		o, err = r.save(ctx, dir, extra)
	case bareEtcdctl:
		o, err = r.etcdctl(ctx, dir)
	case scriptPipeline:
		o, err = r.pipeline(ctx, dir)
	}
	if err != nil {
		return o, err
	}
	fi, err := os.Stat(o.snapshot)
	if err != nil {
		return o, fmt.Errorf("%s wrote no snapshot: %w", c, err)
	}
	o.snapSize = fi.Size()
	return o, nil
}

// save runs etcd-backup as on a master: zero configuration but NODE_NAME
// and the host root; JSON logs for their timestamps.
func (r *runner) save(ctx context.Context, dir string, extra []string) (outcome, error) {
	results := filepath.Join(dir, "results")
	if err := os.Mkdir(results, 0o700); err != nil {
		return outcome{}, fmt.Errorf("create results directory: %w", err)
	}
	args := append([]string{"save", "--host-root", r.c.HostRoot, "--results-dir", results, "--log-format", "json"}, extra...)
	cmd := command{
		path: r.bin,
		args: append(args, filepath.Join(dir, "backup")),
		env:  append(slices.Clone(r.env), "NODE_NAME="+r.c.NodeName),
	}
	var out bytes.Buffer
	r.settle()
	u, err := measure(ctx, cmd, &out)
	if err != nil {
		return outcome{}, err
	}
	snap, err := os.ReadFile(filepath.Join(results, "snapshot-path"))
	if err != nil {
		return outcome{}, fmt.Errorf("etcd-backup save wrote no snapshot-path result: %w", err)
	}
	return outcome{usage: u, snapshot: string(snap), log: out.Bytes()}, nil
}

// etcdctl runs bare `etcdctl snapshot save`, as the script does.
func (r *runner) etcdctl(ctx context.Context, dir string) (outcome, error) {
	snap := filepath.Join(dir, "snapshot.db")
	var out bytes.Buffer
	r.settle()
	u, err := measure(ctx, r.etcdctlSave(snap), &out)
	return outcome{usage: u, snapshot: snap, log: out.Bytes()}, err
}

func (r *runner) etcdctlSave(snap string) command {
	return command{
		path: r.tools.etcdctl,
		args: []string{"--endpoints", r.c.Endpoint, "--cacert", r.c.CACert, "--cert", r.c.Cert, "--key", r.c.Key, "snapshot", "save", snap},
		env:  append(slices.Clone(r.env), "ETCDCTL_API=3"),
	}
}

// pipeline runs what cluster-backup.sh runs, one after the other and in its
// order: archive the static pod resources, take the snapshot, check it.
func (r *runner) pipeline(ctx context.Context, dir string) (outcome, error) {
	snap := filepath.Join(dir, "snapshot.db")
	tarArgs := append([]string{"-czpf", filepath.Join(dir, "static_kuberesources.tar.gz"), "-C", filepath.Join(r.c.HostRoot, "etc", "kubernetes")}, r.tarDirs...)
	steps := []command{
		{path: "tar", args: tarArgs, env: r.env},
		r.etcdctlSave(snap),
		{path: r.tools.etcdutl, args: []string{"snapshot", "status", snap, "-w", "json"}, env: r.env},
	}
	var total usage
	var out bytes.Buffer
	r.settle()
	for _, step := range steps {
		u, err := measure(ctx, step, &out)
		if err != nil {
			return outcome{}, err
		}
		total = total.add(u)
	}
	return outcome{usage: total, snapshot: snap, log: out.Bytes()}, nil
}
