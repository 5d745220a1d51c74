package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/discovery"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/member"
	"github.com/etcd-backup/etcd-backup/internal/openshift"
	"github.com/etcd-backup/etcd-backup/internal/preflight"
	"github.com/etcd-backup/etcd-backup/internal/staticpod"
)

// resolveMember merges explicit settings over what discovery finds (etcd.env
// on OpenShift, kubeadm's etcd manifest otherwise). Discovery runs only when
// something is missing, so a node with all four given needs neither.
func resolveMember(opts Options) (member.Config, error) {
	cfg := member.Config{
		Endpoint: opts.Endpoint, CACert: opts.CACert, Cert: opts.Cert, Key: opts.Key,
		RequestTimeout: opts.RequestTimeout,
	}
	if strings.Contains(cfg.Endpoint, ",") {
		return cfg, exitcode.With(exitcode.Usage, fmt.Errorf("--endpoints %q names several members: a snapshot comes from exactly one, the local member", cfg.Endpoint))
	}
	if cfg.Endpoint != "" && cfg.CACert != "" && cfg.Cert != "" && cfg.Key != "" {
		return cfg, nil
	}
	found, err := discovery.Discover(opts.HostRoot, opts.NodeName)
	if err != nil {
		// Discover's errors already say what was being discovered.
		return cfg, exitcode.With(exitcode.Usage, err)
	}
	cfg.Endpoint = firstNonEmpty(cfg.Endpoint, found.Endpoint)
	cfg.CACert = firstNonEmpty(cfg.CACert, found.CACert)
	cfg.Cert = firstNonEmpty(cfg.Cert, found.Cert)
	cfg.Key = firstNonEmpty(cfg.Key, found.Key)
	return cfg, nil
}

// gatherFacts reads everything preflight looks at. Errors are kept in the
// facts, not returned: with --force a backup proceeds without them.
func gatherFacts(ctx context.Context, m *member.Member, dir *backupDir, opts Options) preflight.Facts {
	f := preflight.Facts{Now: opts.Now()}
	f.Member, f.MemberErr = m.Status(ctx)
	f.Revisions, f.RevisionsErr = staticpod.Running(opts.HostRoot)
	if f.MemberErr == nil {
		f.Alarms, f.AlarmsErr = m.Alarms(ctx, f.Member.ID)
		f.ClusterVersion, f.Operators, f.ClusterVersionErr = readOpenShift(ctx, m, opts)
	}
	free, err := dir.free()
	if err != nil {
		opts.Log.Warn("cannot tell free space", "error", err)
		free = ^uint64(0)
	}
	f.FreeBytes = free
	return f
}

// readOpenShift reads the ClusterVersion and the four ClusterOperators from
// etcd; a nil ClusterVersion with no error means the cluster is not OpenShift.
func readOpenShift(ctx context.Context, m *member.Member, opts Options) (*openshift.ClusterVersion, map[string]*openshift.ClusterOperator, error) {
	cv, err := clusterVersion(ctx, m)
	if err != nil || cv == nil {
		return nil, nil, err
	}
	ops := map[string]*openshift.ClusterOperator{}
	for _, name := range staticpod.Components {
		data, ok, err := m.Get(ctx, openshift.ClusterOperatorKey(name))
		if err != nil || !ok {
			continue
		}
		co, err := openshift.ParseClusterOperator(data)
		if err != nil {
			opts.Log.Warn("cannot read ClusterOperator "+name, "error", err)
			continue
		}
		ops[name] = co
	}
	return cv, ops, nil
}

func clusterVersion(ctx context.Context, m *member.Member) (*openshift.ClusterVersion, error) {
	data, ok, err := m.Get(ctx, openshift.ClusterVersionKey)
	if err != nil || !ok {
		return nil, err
	}
	return openshift.ParseClusterVersion(data)
}

// waitForVersion polls the ClusterVersion until the update to
// opts.WaitForVersion has completed and no ClusterOperator of the control
// plane is progressing: the moment after an upgrade to take a backup.
func waitForVersion(ctx context.Context, m *member.Member, opts Options) error {
	ctx, cancel := context.WithTimeoutCause(ctx, opts.WaitTimeout, errors.New("--wait-timeout reached"))
	defer cancel()
	opts.Log.Info("waiting for the cluster to complete the update", "version", opts.WaitForVersion, "timeout", opts.WaitTimeout)
	tick := time.NewTicker(opts.PollInterval)
	defer tick.Stop()
	last := ""
	for {
		state, done := upgradeState(ctx, m, opts)
		if done {
			opts.Log.Info("cluster runs " + opts.WaitForVersion + " and nothing is progressing")
			return nil
		}
		if state != last {
			opts.Log.Info("still waiting: " + state)
			last = state
		}
		select {
		case <-ctx.Done():
			return exitcode.With(exitcode.Preflight, fmt.Errorf("cluster did not complete the update to %s: %s (%w)", opts.WaitForVersion, state, context.Cause(ctx)))
		case <-tick.C:
		}
	}
}

func upgradeState(ctx context.Context, m *member.Member, opts Options) (string, bool) {
	cv, err := clusterVersion(ctx, m)
	switch {
	case err != nil:
		return err.Error(), false
	case cv == nil:
		return "no ClusterVersion in etcd", false
	case !cv.Completed(opts.WaitForVersion):
		if up, why := cv.Upgrading(); up {
			return why, false
		}
		return "cluster runs " + cv.Version(), false
	}
	_, ops, _ := readOpenShift(ctx, m, opts)
	for _, name := range staticpod.Components {
		if co := ops[name]; co == nil {
			return "ClusterOperator " + name + " not readable", false
		} else if p, why := co.Progressing(); p {
			return "ClusterOperator " + name + " " + why, false
		}
	}
	return "", true
}
