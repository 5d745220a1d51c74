package main

import (
	"context"
	"strings"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

func verifyCommand() *command {
	return &command{
		name:    "verify",
		args:    []string{"TARGET"},
		summary: "check a backup end to end against its backup.json; --restore adds a trial restore",
		setup: func(fs *pflag.FlagSet) runFunc {
			var (
				o         verify.Options
				latest    bool
				clusterID string
			)
			fs.BoolVar(&latest, "latest", false, "TARGET is a gs:// prefix (as given to upload): verify its newest complete backup")
			fs.StringVar(&clusterID, "cluster-id", "", "with --latest, the cluster whose backup to verify (needed when the prefix holds several)")
			fs.BoolVar(&o.Restore, "restore", false, "also restore the snapshot into a scratch directory with etcd's restore code and compare")
			fs.StringVar(&o.ScratchDir, "scratch-dir", "", "where the trial restore writes (default: the system temp dir); needs about the snapshot's size")
			stallTimeout := stallTimeoutFlag(fs)
			return func(ctx context.Context, env *env, args []string) error {
				o.Log = env.log
				check := verify.Dir
				if strings.HasPrefix(args[0], store.Scheme+"://") {
					check = func(ctx context.Context, target string, o verify.Options) (*manifest.Backup, error) {
						c, closeFn, ref, err := openBackup(ctx, env, defaultProgressInterval, gcs.Options{StallTimeout: *stallTimeout}, target, latest, clusterID)
						if err != nil {
							return nil, err
						}
						defer closeFn()
						return c.Verify(ctx, ref, o)
					}
				} else if latest || clusterID != "" {
					return usage("--latest and --cluster-id apply to a gs:// TARGET, not to a local directory")
				}
				b, err := check(ctx, args[0], o)
				if err != nil {
					return err
				}
				env.log.Info("backup verified", "target", args[0], "revision", b.Etcd.Revision, "keys", b.Etcd.KeyCount, "timestamp", b.Timestamp)
				return nil
			}
		},
	}
}
