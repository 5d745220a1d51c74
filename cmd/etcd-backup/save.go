package main

import (
	"context"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/results"
)

func saveCommand() *command {
	return &command{
		name:    "save",
		args:    []string{"DIR"},
		summary: "take one backup of the local etcd member into DIR (the cluster-backup.sh replacement)",
		setup: func(fs *pflag.FlagSet) runFunc {
			var o backup.Options
			fs.StringVar(&o.HostRoot, "host-root", "/", "where the host's / is mounted (etcd.env and /etc/kubernetes are read below it)")
			fs.StringVar(&o.NodeName, "node-name", "", "this node's name, to find its etcd member in etcd.env")
			fs.StringVar(&o.Endpoint, "endpoints", "", "client URL of the local etcd member (default: https://<node IP>:2379 from etcd.env, or kubeadm's etcd.yaml)")
			fs.StringVar(&o.CACert, "cacert", "", "CA bundle that signs etcd's serving certificate (default: from etcd.env, or kubeadm's pki/etcd)")
			fs.StringVar(&o.Cert, "cert", "", "etcd client certificate (default: from etcd.env, or kubeadm's pki/etcd)")
			fs.StringVar(&o.Key, "key", "", "etcd client key (default: from etcd.env, or kubeadm's pki/etcd)")
			fs.BoolVar(&o.Force, "force", false, "skip preflight checks; file names then carry "+manifest.DirtySuffix)
			o.MinClusterAge = backup.DefaultMinClusterAge
			fs.Var((*longDuration)(&o.MinClusterAge), "min-cluster-age", "refuse to back up a cluster younger than this (first certificate rotation)")
			fs.StringVar(&o.WaitForVersion, "wait-for-version", "", "wait until the cluster has completed the update to this version, then back up")
			fs.DurationVar(&o.WaitTimeout, "wait-timeout", backup.DefaultWaitTimeout, "how long --wait-for-version waits")
			fs.DurationVar(&o.PollInterval, "poll-interval", backup.DefaultPollInterval, "how often --wait-for-version looks")
			fs.DurationVar(&o.RequestTimeout, "request-timeout", backup.DefaultRequestTimeout, "deadline of each request to etcd other than the snapshot")
			fs.DurationVar(&o.ProgressInterval, "progress-interval", backup.DefaultProgressInterval, "how often to log snapshot progress")
			fs.DurationVar(&o.StallTimeout, "stall-timeout", backup.DefaultStallTimeout, "abandon the snapshot when etcd sends nothing for this long")
			return func(ctx context.Context, env *env, args []string) error {
				o.Dir = args[0]
				o.Log = env.log
				if o.WaitTimeout <= 0 || o.PollInterval <= 0 || o.ProgressInterval <= 0 || o.RequestTimeout <= 0 || o.StallTimeout <= 0 {
					return usage("--wait-timeout, --poll-interval, --progress-interval, --request-timeout and --stall-timeout must be positive")
				}
				if o.WaitForVersion != "" && env.timeout > 0 && o.WaitTimeout >= env.timeout {
					return usage("--wait-timeout %s must be shorter than --timeout %s, which covers the wait and the backup", o.WaitTimeout, env.timeout)
				}
				res, err := backup.Save(ctx, o)
				if err != nil {
					return err
				}
				env.metrics.Backup(res.Manifest)
				return results.Write(env.resultsDir, saveResults(res))
			}
		},
	}
}

func saveResults(res *backup.Result) []results.Result {
	b := res.Manifest
	snap := b.File(manifest.KindSnapshot)
	return []results.Result{
		{Name: "backup-dir", Value: res.Dir},
		{Name: "snapshot-path", Value: res.SnapshotPath},
		{Name: "resources-path", Value: res.ResourcesPath},
		{Name: "snapshot-sha256", Value: snap.SHA256},
		{Name: "snapshot-size", Value: strconv.FormatInt(snap.Size, 10)},
		{Name: "etcd-revision", Value: strconv.FormatInt(b.Etcd.Revision, 10)},
		{Name: "cluster-version", Value: b.Cluster.Version},
		{Name: "timestamp", Value: b.Timestamp},
		{Name: "dirty", Value: strconv.FormatBool(b.Dirty)},
	}
}
