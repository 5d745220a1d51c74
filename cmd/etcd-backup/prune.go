package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/destination"
)

func pruneCommand() *command {
	return &command{
		name:    "prune",
		args:    []string{"DEST"},
		summary: "apply retention at DEST: remove complete backups etcd-backup wrote beyond --keep-last/--keep-within, never the newest",
		setup: func(fs *pflag.FlagSet) runFunc {
			var (
				policy    destination.Policy
				dryRun    bool
				clusterID string
			)
			fs.IntVar(&policy.KeepLast, "keep-last", 0, "keep the newest N complete backups of each cluster")
			fs.Var((*longDuration)(&policy.KeepWithin), "keep-within", "keep complete backups younger than this, e.g. 30d or 720h")
			fs.BoolVar(&dryRun, "dry-run", false, "print what would be removed, remove nothing")
			fs.StringVar(&clusterID, "cluster-id", "", "prune only this cluster's backups")
			df := addDestFlags(fs, "fail when the service answers nothing for this long", false)
			return func(ctx context.Context, env *env, args []string) error {
				env.metrics.ClusterID, env.metrics.AllClusters = clusterID, clusterID == ""
				if err := zeroPolicy(fs, policy); err != nil {
					return err
				}
				if err := policy.Check(); err != nil {
					return err
				}
				o, err := df.options(env)
				if err != nil {
					return err
				}
				d, err := destinations().Open(ctx, args[0], o)
				if err != nil {
					return err
				}
				defer d.Close()
				env.metrics.Destination = d.URL()
				decisions, err := destination.Prune(ctx, d, policy, clusterID, time.Now(), dryRun)
				if perr := printDecisions(env, decisions); err == nil {
					err = perr
				}
				if err == nil && clusterID != "" && len(decisions) == 0 {
					// A scheduled prune whose cluster ID is mistyped would
					// otherwise never remove anything, and never say so.
					env.log.Warn(fmt.Sprintf("no backups of cluster %s at %s, so nothing is pruned: 'etcd-backup list %s' shows the clusters there", clusterID, d.URL(), d.URL()))
				}
				return err
			}
		},
	}
}

// zeroPolicy refuses rules given only as 0, which set none: to prune, 0
// keeps all, as it does for upload, and whoever wrote it may have meant
// "remove all", which prune never does.
func zeroPolicy(fs *pflag.FlagSet, policy destination.Policy) error {
	if policy != (destination.Policy{}) {
		return nil
	}
	var given []string
	for _, name := range []string{"keep-last", "keep-within"} {
		if fs.Changed(name) {
			given = append(given, "--"+name+" 0")
		}
	}
	if len(given) == 0 {
		return nil
	}
	verb := "sets"
	if len(given) > 1 {
		verb = "set"
	}
	return usage("%s %s no rule, so prune has nothing to apply: give --keep-last N of 1 or more, or --keep-within DURATION; the newest complete backup of each cluster is kept whatever they say", strings.Join(given, " and "), verb)
}

func printDecisions(env *env, decisions []destination.Decision) error {
	w := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ACTION\tBACKUP\tREASON")
	for _, d := range decisions {
		fmt.Fprintf(w, "%s\t%s\t%s\n", d.Action, d.Entry.URL, d.Reason)
	}
	return w.Flush()
}

// logDecisions reports the retention upload applies, as log lines.
func logDecisions(env *env, decisions []destination.Decision) {
	for _, d := range decisions {
		env.log.Info(fmt.Sprintf("retention: %s %s: %s", d.Action, d.Entry.URL, d.Reason))
	}
}
