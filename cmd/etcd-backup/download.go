package main

import (
	"context"
	"time"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
)

func downloadCommand() *command {
	return &command{
		name:    "download",
		args:    []string{"BACKUP", "DIR"},
		summary: "fetch one backup (gs://bucket/prefix/<cluster-id>/<ts>-<sha> as list prints it, or --latest under a prefix) into a new or empty DIR, checked, laid out for cluster-restore.sh",
		setup: func(fs *pflag.FlagSet) runFunc {
			var (
				latest           bool
				clusterID        string
				progressInterval time.Duration
				stallTimeout     time.Duration
			)
			fs.BoolVar(&latest, "latest", false, "BACKUP is a prefix (as given to upload): fetch its newest complete backup")
			fs.StringVar(&clusterID, "cluster-id", "", "with --latest, the cluster whose backup to fetch (needed when the prefix holds several)")
			fs.DurationVar(&progressInterval, "progress-interval", defaultProgressInterval, "how often to log download progress")
			fs.DurationVar(&stallTimeout, "stall-timeout", gcs.DefaultStallTimeout, "fail when the service sends nothing for this long"+stallTimeoutUsage)
			return func(ctx context.Context, env *env, args []string) error {
				if progressInterval <= 0 || stallTimeout <= 0 {
					return usage("--progress-interval and --stall-timeout must be positive")
				}
				c, closeFn, ref, err := openBackup(ctx, env, progressInterval, gcs.Options{StallTimeout: stallTimeout}, args[0], latest, clusterID)
				if err != nil {
					return err
				}
				defer closeFn()
				b, err := c.Download(ctx, ref, args[1])
				if err != nil {
					return err
				}
				env.log.Info("backup downloaded and verified; restore with: cluster-restore.sh "+args[1],
					"backup", ref.String(), "snapshot", b.File(manifest.KindSnapshot).Name, "revision", b.Etcd.Revision)
				return nil
			}
		},
	}
}

// openBackup connects to the destination of BACKUP and resolves it: one
// backup's URL, or with latest the newest complete backup under a prefix.
func openBackup(ctx context.Context, env *env, progressInterval time.Duration, o gcs.Options, s string, latest bool, clusterID string) (*remote.Client, func(), remote.Ref, error) {
	if clusterID != "" && !latest {
		return nil, nil, remote.Ref{}, usage("--cluster-id goes with --latest; a backup URL already names its cluster")
	}
	var ref remote.Ref
	var err error
	if latest {
		ref.Dest, err = parseDest(s)
	} else {
		ref, err = remote.ParseRef(s)
	}
	if err != nil {
		return nil, nil, remote.Ref{}, err
	}
	c, closeFn, err := newRemote(ctx, env, progressInterval, o)
	if err != nil {
		return nil, nil, remote.Ref{}, err
	}
	if latest {
		b, err := c.Latest(ctx, ref.Dest, clusterID)
		if err != nil {
			closeFn()
			return nil, nil, remote.Ref{}, err
		}
		ref = b.Ref
	}
	return c, closeFn, ref, nil
}
