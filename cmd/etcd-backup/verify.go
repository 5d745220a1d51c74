package main

import (
	"context"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/verify"
)

func verifyCommand() *command {
	return &command{
		name:    "verify",
		args:    []string{"TARGET"},
		summary: "check a backup end to end against its backup.json; --restore adds a trial restore",
		setup: func(fs *pflag.FlagSet) runFunc {
			var o verify.Options
			fs.BoolVar(&o.Restore, "restore", false, "also restore the snapshot into a scratch directory with etcd's restore code and compare")
			fs.StringVar(&o.ScratchDir, "scratch-dir", "", "where the trial restore writes (default: the system temp dir); needs about the snapshot's size")
			return func(ctx context.Context, env *env, args []string) error {
				o.Log = env.log
				b, err := verify.Dir(ctx, args[0], o)
				if err != nil {
					return err
				}
				env.log.Info("backup verified", "dir", args[0], "revision", b.Etcd.Revision, "keys", b.Etcd.KeyCount, "timestamp", b.Timestamp)
				return nil
			}
		},
	}
}
