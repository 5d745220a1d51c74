// Package preflight decides whether the cluster is in a state to back up,
// from facts gathered beforehand, so that each rule is a pure function that
// tests can drive case by case.
//
// The rules are cluster-backup.sh's, made stricter: the script only asks
// whether four ClusterOperators are Progressing; here the member itself,
// the running static pod revisions, an upgrade in flight, the cluster's age
// and the free space are checked too.
package preflight

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/member"
	"github.com/etcd-backup/etcd-backup/internal/openshift"
	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/staticpod"
)

// Facts is what the checks look at.
type Facts struct {
	Member    member.Status
	MemberErr error // why Status could not be read
	Alarms    []string
	AlarmsErr error // why alarms could not be listed (no quorum)
	// ClusterVersion is nil where the cluster is not OpenShift, or where it
	// could not be read: then MemberErr or ClusterVersionErr says why.
	ClusterVersion    *openshift.ClusterVersion
	ClusterVersionErr error
	// Operators maps each of staticpod.Components to its ClusterOperator, or
	// to nil where the object is missing.
	Operators    map[string]*openshift.ClusterOperator
	Revisions    []staticpod.Revision
	RevisionsErr error
	// FreeBytes is the space available in the backup directory.
	FreeBytes uint64
	Now       time.Time
}

// Options tune the checks.
type Options struct {
	MinClusterAge time.Duration
}

// Result is the outcome of all checks.
type Result struct {
	Passed  []string
	Skipped []manifest.SkippedCheck
	Failed  []error
}

// Err joins the failures into one line, or is nil when nothing failed.
func (r Result) Err() error {
	if len(r.Failed) == 0 {
		return nil
	}
	msgs := make([]string, len(r.Failed))
	for i, err := range r.Failed {
		msgs[i] = strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return errors.New(strings.Join(msgs, "; "))
}

// check returns a non-empty skip reason when it does not apply, or an error
// that says what is wrong and how to proceed.
type check struct {
	name string
	run  func(Facts, Options) (skip string, err error)
}

// Names of the checks, as recorded in backup.json.
const (
	MemberHealth      = "member-health"
	StaticPods        = "static-pod-revisions"
	ClusterOperators  = "cluster-operators"
	ClusterVersion    = "cluster-version"
	ClusterAge        = "cluster-age"
	FreeSpace         = "free-space"
	notOpenShiftSkip  = "no ClusterVersion in etcd: not an OpenShift cluster"
	freeSpaceFloor    = 64 << 20
	freeSpaceFraction = 10
)

var checks = []check{
	{MemberHealth, memberHealth},
	{StaticPods, staticPods},
	{ClusterOperators, clusterOperators},
	{ClusterVersion, clusterVersion},
	{ClusterAge, clusterAge},
	{FreeSpace, freeSpace},
}

// Run evaluates every check.
func Run(f Facts, o Options) Result {
	var r Result
	for _, c := range checks {
		skip, err := c.run(f, o)
		switch {
		case err != nil:
			r.Failed = append(r.Failed, fmt.Errorf("preflight %s: %w", c.name, err))
		case skip != "":
			r.Skipped = append(r.Skipped, manifest.SkippedCheck{Name: c.name, Reason: skip})
		default:
			r.Passed = append(r.Passed, c.name)
		}
	}
	return r
}

// Skip records every check as skipped for reason (--force).
func Skip(reason string) []manifest.SkippedCheck {
	out := make([]manifest.SkippedCheck, len(checks))
	for i, c := range checks {
		out[i] = manifest.SkippedCheck{Name: c.name, Reason: reason}
	}
	return out
}

func memberHealth(f Facts, _ Options) (string, error) {
	switch {
	case f.MemberErr != nil:
		return "", f.MemberErr
	case f.Member.IsLearner:
		return "", fmt.Errorf("member %s is a learner: its data may lag; back up a voting member", f.Member.Name)
	case f.AlarmsErr != nil:
		return "", fmt.Errorf("cannot list alarms, the cluster may have lost quorum: %w", f.AlarmsErr)
	case len(f.Alarms) > 0:
		return "", fmt.Errorf("member %s has active alarms %s: resolve them (etcdctl alarm list) before backing up", f.Member.Name, strings.Join(f.Alarms, ","))
	}
	return "", nil
}

func staticPods(f Facts, _ Options) (string, error) {
	if f.RevisionsErr != nil {
		return "", f.RevisionsErr
	}
	if len(f.Revisions) == 0 {
		return "no OpenShift static pod manifests: a kubeadm control-plane node", nil
	}
	return "", nil
}

func clusterOperators(f Facts, _ Options) (string, error) {
	if skip := openShiftSkip(f); skip != "" {
		return skip, nil
	}
	var errs []error
	for _, name := range staticpod.Components {
		co := f.Operators[name]
		if co == nil {
			errs = append(errs, fmt.Errorf("ClusterOperator %s not found in etcd", name))
			continue
		}
		if progressing, why := co.Progressing(); progressing {
			errs = append(errs, fmt.Errorf("ClusterOperator %s is progressing (%s): a reliable backup needs no rollout in progress", name, why))
		}
	}
	return "", errors.Join(errs...)
}

// openShiftSkip is why the OpenShift checks do not apply, or "". A member
// that did not answer says nothing about the platform, so it is not taken
// for a plain Kubernetes cluster.
func openShiftSkip(f Facts) string {
	switch {
	case f.MemberErr != nil:
		return "etcd did not answer: whether this is an OpenShift cluster is unknown"
	case f.ClusterVersionErr != nil:
		return "the ClusterVersion could not be read"
	case f.ClusterVersion == nil:
		return notOpenShiftSkip
	}
	return ""
}

func clusterVersion(f Facts, _ Options) (string, error) {
	if f.MemberErr == nil && f.ClusterVersionErr != nil {
		return "", fmt.Errorf("cannot read the ClusterVersion: %w", f.ClusterVersionErr)
	}
	if skip := openShiftSkip(f); skip != "" {
		return skip, nil
	}
	if upgrading, why := f.ClusterVersion.Upgrading(); upgrading {
		return "", fmt.Errorf("cluster is mid-upgrade (%s): back up after it completes (save --wait-for-version)", why)
	}
	return "", nil
}

func clusterAge(f Facts, o Options) (string, error) {
	if skip := openShiftSkip(f); skip != "" {
		return skip, nil
	}
	created := f.ClusterVersion.Metadata.CreationTimestamp
	if created.IsZero() {
		return "", errors.New("ClusterVersion has no creationTimestamp")
	}
	if age := f.Now.Sub(created); age < o.MinClusterAge {
		return "", fmt.Errorf("cluster is %s old, younger than %s: its first certificate rotation has not happened, and a backup from before it cannot be restored after it", age.Round(time.Minute), o.MinClusterAge)
	}
	return "", nil
}

// Need is the free space a backup of a member with dbSize bytes needs: the
// snapshot is at most the DB size, plus a margin for the archive and for
// growth while the snapshot runs.
func Need(dbSize int64) uint64 {
	margin := max(dbSize/freeSpaceFraction, freeSpaceFloor)
	return uint64(dbSize + margin)
}

func freeSpace(f Facts, _ Options) (string, error) {
	if f.MemberErr != nil {
		return "member size unknown", nil
	}
	if need := Need(f.Member.DBSize); f.FreeBytes < need {
		return "", fmt.Errorf("backup directory has %s free, a backup of this %s member needs %s", progress.Bytes(int64(f.FreeBytes)), progress.Bytes(f.Member.DBSize), progress.Bytes(int64(need)))
	}
	return "", nil
}
