// Package metrics reports how one run of a command went, so that backups
// that fail or silently stop happening raise alerts: pushed to a Prometheus
// Pushgateway (the standard way for batch jobs) and written to a file for
// node-exporter's textfile collector.
//
// Every series is a gauge. A run is labelled with its command, the cluster
// it was about and, for commands that work on one, the destination; on the
// Pushgateway these labels are the grouping key, under job "etcd-backup".
// Pushes use the Pushgateway's POST (replace only the metrics pushed), and a
// failed run does not push etcd_backup_last_success_timestamp_seconds, so
// the last success survives any number of failures.
package metrics

import (
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// Job is the Pushgateway job every run pushes under.
const Job = "etcd-backup"

// Label names.
const (
	LabelCommand     = "command"
	LabelCluster     = "cluster_id"
	LabelDestination = "destination"
	LabelKind        = "kind"
)

// UnknownCluster is the cluster_id of a run that failed before it learned
// which cluster it was about (save cannot reach etcd, say). The next success
// of the same command and destination pushed to a Pushgateway removes that
// group, so that the failure alert resolves.
const UnknownCluster = "unknown"

// Metric names.
const (
	LastSuccess          = "etcd_backup_last_success_timestamp_seconds"
	LastAttempt          = "etcd_backup_last_attempt_timestamp_seconds"
	Success              = "etcd_backup_success"
	Duration             = "etcd_backup_duration_seconds"
	ExitCode             = "etcd_backup_exit_code"
	SizeBytes            = "etcd_backup_size_bytes"
	Revision             = "etcd_backup_etcd_revision"
	NewestGoodTimestamp  = "etcd_backup_newest_good_backup_timestamp_seconds"
	NewestGoodAgeSeconds = "etcd_backup_newest_good_backup_age_seconds"
	CorruptBackups       = "etcd_backup_corrupt_backups"
)

// Run is what one run of a command found out; the command fills it in as
// it learns. The zero value of each field means "not known".
type Run struct {
	Command string
	Start   time.Time
	// ClusterID is the cluster the run was about.
	ClusterID string
	// AllClusters marks a run over every cluster at Destination (prune with
	// no --cluster-id): it carries no cluster_id label.
	AllClusters bool
	// Destination is the gs:// prefix the run worked on.
	Destination string
	// Sizes are the backup's file sizes by kind (snapshot, resources).
	Sizes    map[string]int64
	Revision int64
	// NewestGood is when the newest backup verify found good was taken.
	NewestGood time.Time
	// Listed marks a run that listed the cluster's backups at Destination
	// (verify --latest); Corrupt is then how many of them list calls
	// corrupt.
	Listed  bool
	Corrupt int
	// Skipped marks a run that had nothing to do (upload with no
	// destination): it is not reported.
	Skipped bool
}

// Backup records what b says about the backup the run worked on.
func (r *Run) Backup(b *manifest.Backup) {
	r.ClusterID = b.ClusterKey()
	r.Revision = b.Etcd.Revision
	r.Sizes = map[string]int64{}
	for _, f := range b.Files {
		r.Sizes[f.Kind] += f.Size
	}
}

// Outcome is how the run ended.
type Outcome struct {
	End      time.Time
	ExitCode int
}

// labels are the run's identifying labels: the Pushgateway grouping key.
func (r *Run) labels() prometheus.Labels {
	l := prometheus.Labels{LabelCommand: r.Command}
	switch {
	case r.AllClusters:
	case r.ClusterID != "":
		l[LabelCluster] = r.ClusterID
	default:
		l[LabelCluster] = UnknownCluster
	}
	if r.Destination != "" {
		l[LabelDestination] = r.Destination
	}
	return l
}

// registry holds the run's series, each with constLabels.
func (r *Run) registry(o Outcome, constLabels prometheus.Labels) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, v float64) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: constLabels})
		g.Set(v)
		reg.MustRegister(g)
	}
	ok := o.ExitCode == 0
	if ok {
		gauge(LastSuccess, "When the command last succeeded, in seconds since the epoch.", seconds(o.End))
	}
	gauge(LastAttempt, "When the command last ended, in seconds since the epoch.", seconds(o.End))
	gauge(Success, "1 if the command's last run succeeded, else 0.", boolValue(ok))
	gauge(Duration, "How long the command's last run took.", o.End.Sub(r.Start).Seconds())
	gauge(ExitCode, "The exit code of the command's last run (see the README's exit-code table).", float64(o.ExitCode))
	if len(r.Sizes) > 0 {
		sizes := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: SizeBytes, Help: "Size of each file of the backup the command last worked on, by kind.", ConstLabels: constLabels}, []string{LabelKind})
		for _, kind := range slices.Sorted(maps.Keys(r.Sizes)) {
			sizes.WithLabelValues(kind).Set(float64(r.Sizes[kind]))
		}
		reg.MustRegister(sizes)
	}
	if r.Revision != 0 {
		gauge(Revision, "The etcd revision of the backup the command last worked on.", float64(r.Revision))
	}
	if !r.NewestGood.IsZero() {
		gauge(NewestGoodTimestamp, "When the newest backup verify found good was taken, in seconds since the epoch.", seconds(r.NewestGood))
		gauge(NewestGoodAgeSeconds, "Age of the newest backup verify found good, when verify ran.", o.End.Sub(r.NewestGood).Seconds())
	}
	if r.Listed {
		gauge(CorruptBackups, "Backups of the cluster at the destination whose stored files do not match their backup.json, as verify --latest last listed them; prune leaves them for an operator.", float64(r.Corrupt))
	}
	return reg
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
