package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
)

func listCommand() *command {
	return &command{
		name:    "list",
		args:    []string{"DEST"},
		summary: "list the backups at DEST (gs://bucket/prefix), newest first: time, cluster version, etcd revision, size, state (complete, incomplete or corrupt)",
		setup: func(fs *pflag.FlagSet) runFunc {
			output := fs.String("output", "text", "output format: text or json")
			clusterID := fs.String("cluster-id", "", "list only this cluster's backups")
			stallTimeout := stallTimeoutFlag(fs)
			return func(ctx context.Context, env *env, args []string) error {
				dest, err := parseDest(args[0])
				if err != nil {
					return err
				}
				if *output != "text" && *output != "json" {
					return usage("--output %q: want text or json", *output)
				}
				c, closeFn, err := newRemote(ctx, env, defaultProgressInterval, gcs.Options{StallTimeout: *stallTimeout})
				if err != nil {
					return err
				}
				defer closeFn()
				backups, err := c.List(ctx, dest)
				if err != nil {
					return err
				}
				var rows []listed
				for _, b := range backups {
					if *clusterID == "" || b.Ref.ClusterID == *clusterID {
						rows = append(rows, listedOf(b))
					}
				}
				if len(rows) == 0 {
					if err := logNearby(ctx, env, c, dest, *clusterID, backups); err != nil {
						return err
					}
				}
				if *output == "json" {
					if rows == nil {
						rows = []listed{}
					}
					enc := json.NewEncoder(env.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(rows)
				}
				return printList(env, rows)
			}
		},
	}
}

// listed is one backup as list prints it.
type listed struct {
	Backup         string    `json:"backup"`
	ClusterID      string    `json:"clusterID"`
	Timestamp      string    `json:"timestamp"`
	Time           time.Time `json:"time"`
	ClusterVersion string    `json:"clusterVersion,omitempty"`
	EtcdRevision   int64     `json:"etcdRevision,omitempty"`
	Size           int64     `json:"size"`
	Dirty          bool      `json:"dirty"`
	// State is complete, incomplete or corrupt; Complete says whether it
	// is complete, for scripts written before State.
	State    string `json:"state"`
	Complete bool   `json:"complete"`
	Problem  string `json:"problem,omitempty"`
}

func listedOf(b *remote.Backup) listed {
	l := listed{
		Backup:    b.Ref.String(),
		ClusterID: b.Ref.ClusterID,
		Timestamp: b.Ref.Timestamp,
		Time:      b.Time,
		Size:      b.Size(),
		State:     string(b.State),
		Complete:  b.State == remote.Complete,
		Problem:   b.Problem,
	}
	if m := b.Manifest; m != nil {
		l.ClusterVersion, l.EtcdRevision, l.Dirty = m.Cluster.Version, m.Etcd.Revision, m.Dirty
	}
	return l
}

// logNearby says, where list found nothing, what it looked for and what
// is stored nearby.
func logNearby(ctx context.Context, env *env, c *remote.Client, dest store.URL, clusterID string, others []*remote.Backup) error {
	what := "no backups"
	if clusterID != "" {
		what = "no backups of cluster " + clusterID
	}
	var hint string
	if len(others) > 0 {
		var ids []string
		for _, b := range others {
			if !slices.Contains(ids, b.Ref.ClusterID) {
				ids = append(ids, b.Ref.ClusterID)
			}
		}
		hint = "there are backups of " + strings.Join(ids, ", ")
	} else {
		var err error
		if hint, err = c.Nearby(ctx, dest); err != nil {
			return err
		}
	}
	env.log.Warn(fmt.Sprintf("%s below %s (looked for <cluster-id>/<ts>-<sha>/backup.json): %s", what, dest, hint))
	return nil
}

func printList(env *env, rows []listed) error {
	w := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIMESTAMP\tCLUSTER VERSION\tREVISION\tSIZE\tDIRTY\tSTATE\tBACKUP")
	for _, r := range rows {
		version, revision := r.ClusterVersion, ""
		if r.EtcdRevision != 0 {
			revision = strconv.FormatInt(r.EtcdRevision, 10)
		}
		if !r.Complete {
			env.log.Warn(r.State + " backup " + r.Backup + ": " + r.Problem)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%s\t%s\n", r.Timestamp, dash(version), dash(revision), progress.Bytes(r.Size), r.Dirty, r.State, r.Backup)
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
