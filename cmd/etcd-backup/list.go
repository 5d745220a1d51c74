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

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/progress"
)

func listCommand() *command {
	return &command{
		name:    "list",
		args:    []string{"DEST"},
		summary: "list the backups at DEST (gs://bucket/prefix, docker://HOST/REPO or oci:PATH), newest first: time, cluster version, etcd revision, size, state (complete, incomplete or corrupt)",
		setup: func(fs *pflag.FlagSet) runFunc {
			output := fs.String("output", "text", "output format: text or json")
			clusterID := fs.String("cluster-id", "", "list only this cluster's backups")
			df := addDestFlags(fs, "fail when the service answers nothing for this long", false)
			return func(ctx context.Context, env *env, args []string) error {
				if *output != "text" && *output != "json" {
					return usage("--output %q: want text or json", *output)
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
				entries, err := d.List(ctx)
				if err != nil {
					return err
				}
				var rows []listed
				for _, e := range slices.Backward(entries) {
					if *clusterID == "" || e.ClusterID == *clusterID {
						rows = append(rows, listedOf(e))
					}
				}
				if len(rows) == 0 {
					if err := logNearby(ctx, env, d, *clusterID, entries); err != nil {
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
	// Digest is an OCI backup's manifest digest, which names it too.
	Digest string `json:"digest,omitempty"`
}

func listedOf(e destination.Entry) listed {
	t, _ := time.Parse(manifest.TimestampLayout, e.Timestamp)
	l := listed{
		Backup:    e.URL,
		Digest:    e.Digest,
		ClusterID: e.ClusterID,
		Timestamp: e.Timestamp,
		Time:      t,
		State:     string(e.State),
		Complete:  e.State == destination.Complete,
		Problem:   e.Problem,
	}
	if m := e.Manifest; m != nil {
		l.ClusterVersion, l.EtcdRevision, l.Dirty, l.Size = m.Cluster.Version, m.Etcd.Revision, m.Dirty, m.Size()
	}
	return l
}

// logNearby says, where list found nothing, what it looked for and what
// is stored nearby.
func logNearby(ctx context.Context, env *env, d destination.Dest, clusterID string, others []destination.Entry) error {
	what := "no backups"
	if clusterID != "" {
		what = "no backups of cluster " + clusterID
	}
	hint := "nothing is stored there"
	if len(others) > 0 {
		var ids []string
		for _, e := range others {
			if !slices.Contains(ids, e.ClusterID) {
				ids = append(ids, e.ClusterID)
			}
		}
		hint = "there are backups of " + strings.Join(ids, ", ")
	} else if h, ok := d.(destination.Hinter); ok {
		var err error
		if hint, err = h.Nearby(ctx); err != nil {
			return err
		}
	}
	env.log.Warn(fmt.Sprintf("%s at %s: %s", what, d.URL(), hint))
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
