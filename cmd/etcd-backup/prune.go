package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
)

func pruneCommand() *command {
	return &command{
		name:    "prune",
		args:    []string{"DEST"},
		summary: "apply retention at DEST: remove complete backups etcd-backup wrote beyond --keep-last/--keep-within, never the newest",
		setup: func(fs *pflag.FlagSet) runFunc {
			var o remote.PruneOptions
			fs.IntVar(&o.KeepLast, "keep-last", 0, "keep the newest N complete backups of each cluster")
			fs.DurationVar(&o.KeepWithin, "keep-within", 0, "keep complete backups younger than this, e.g. 720h")
			fs.BoolVar(&o.DryRun, "dry-run", false, "print what would be removed, remove nothing")
			fs.StringVar(&o.ClusterID, "cluster-id", "", "prune only this cluster's backups")
			stallTimeout := stallTimeoutFlag(fs)
			return func(ctx context.Context, env *env, args []string) error {
				env.metrics.ClusterID, env.metrics.AllClusters = o.ClusterID, o.ClusterID == ""
				dest, err := parseDest(args[0])
				if err != nil {
					return err
				}
				env.metrics.Destination = dest.String()
				if err := o.Check(); err != nil {
					return err
				}
				c, closeFn, err := newRemote(ctx, env, defaultProgressInterval, gcs.Options{StallTimeout: *stallTimeout})
				if err != nil {
					return err
				}
				defer closeFn()
				decisions, err := c.Prune(ctx, dest, o)
				if perr := printDecisions(env, decisions); err == nil {
					err = perr
				}
				return err
			}
		},
	}
}

func printDecisions(env *env, decisions []remote.Decision) error {
	w := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ACTION\tBACKUP\tREASON")
	for _, d := range decisions {
		fmt.Fprintf(w, "%s\t%s\t%s\n", d.Action, d.Backup.Ref, d.Reason)
	}
	return w.Flush()
}

// logDecisions reports the retention upload applies, as log lines.
func logDecisions(env *env, decisions []remote.Decision) {
	for _, d := range decisions {
		env.log.Info(fmt.Sprintf("retention: %s %s: %s", d.Action, d.Backup.Ref, d.Reason))
	}
}
