package testcluster

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Keys of the OpenShift config objects, as the kube-apiserver stores them
// (custom resources are always stored as JSON).
const (
	ClusterVersionKey        = "/kubernetes.io/config.openshift.io/clusterversions/version"
	ClusterOperatorKeyPrefix = "/kubernetes.io/config.openshift.io/clusteroperators/"
)

// seededOperators are the ClusterOperators written at start: the four that
// cluster-backup.sh checks plus a few it must ignore.
func seededOperators() []string {
	return []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
		"authentication", "network", "openshift-apiserver"}
}

type objectMeta struct {
	Name              string `json:"name"`
	UID               string `json:"uid"`
	Generation        int64  `json:"generation"`
	CreationTimestamp string `json:"creationTimestamp"`
}

type condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	LastTransitionTime string `json:"lastTransitionTime"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
}

type release struct {
	Version string `json:"version"`
	Image   string `json:"image"`
}

type updateHistory struct {
	State          string  `json:"state"`
	StartedTime    string  `json:"startedTime"`
	CompletionTime *string `json:"completionTime"`
	Version        string  `json:"version"`
	Image          string  `json:"image"`
	Verified       bool    `json:"verified"`
}

type clusterVersion struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		ClusterID string `json:"clusterID"`
		Channel   string `json:"channel"`
	} `json:"spec"`
	Status struct {
		Desired            release         `json:"desired"`
		History            []updateHistory `json:"history"`
		ObservedGeneration int64           `json:"observedGeneration"`
		Conditions         []condition     `json:"conditions"`
	} `json:"status"`
}

type operandVersion struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type clusterOperator struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct{}   `json:"spec"`
	Status     struct {
		Conditions []condition      `json:"conditions"`
		Versions   []operandVersion `json:"versions"`
	} `json:"status"`
}

// seedOpenShift writes the ClusterVersion and ClusterOperators, then applies
// opts.Progressing and opts.Upgrading through the public setters.
func (c *Cluster) seedOpenShift(ctx context.Context, opts Options, now time.Time) error {
	created := now.Add(-opts.ClusterAge)
	c.ClusterID = uuid.NewString()
	cv := newClusterVersion(c.ClusterID, opts.Version, created)
	kvs := []kv{{ClusterVersionKey, mustJSON(cv)}}
	names := seededOperators()
	for _, n := range opts.Progressing {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, n := range names {
		kvs = append(kvs, kv{ClusterOperatorKeyPrefix + n, mustJSON(newClusterOperator(n, opts.Version, created))})
	}
	if err := putAll(ctx, c.cli, kvs); err != nil {
		return err
	}
	for _, n := range opts.Progressing {
		if err := c.SetProgressing(ctx, n, true); err != nil {
			return err
		}
	}
	if opts.Upgrading {
		return c.SetUpgrading(ctx, NextVersion(opts.Version))
	}
	return nil
}

func newClusterVersion(clusterID, version string, created time.Time) clusterVersion {
	ts := created.Format(time.RFC3339)
	completed := created.Add(40 * time.Minute).Format(time.RFC3339)
	var cv clusterVersion
	cv.APIVersion, cv.Kind = "config.openshift.io/v1", "ClusterVersion"
	cv.Metadata = objectMeta{Name: "version", UID: uuid.NewString(), Generation: 2, CreationTimestamp: ts}
	cv.Spec.ClusterID = clusterID
	cv.Spec.Channel = "stable-" + minor(version)
	cv.Status.Desired = release{Version: version, Image: releaseImage(version)}
	cv.Status.History = []updateHistory{{State: "Completed", StartedTime: ts, CompletionTime: &completed,
		Version: version, Image: releaseImage(version)}}
	cv.Status.ObservedGeneration = 2
	cv.Status.Conditions = []condition{
		{Type: "Available", Status: "True", LastTransitionTime: completed, Message: "Done applying " + version},
		{Type: "Failing", Status: "False", LastTransitionTime: completed},
		{Type: "Progressing", Status: "False", LastTransitionTime: completed, Message: "Cluster version is " + version},
		{Type: "RetrievedUpdates", Status: "False", LastTransitionTime: ts, Reason: "NoChannel"},
	}
	return cv
}

func newClusterOperator(name, version string, created time.Time) clusterOperator {
	ts := created.Format(time.RFC3339)
	var co clusterOperator
	co.APIVersion, co.Kind = "config.openshift.io/v1", "ClusterOperator"
	co.Metadata = objectMeta{Name: name, UID: uuid.NewString(), Generation: 1, CreationTimestamp: ts}
	co.Status.Conditions = []condition{
		{Type: "Degraded", Status: "False", LastTransitionTime: ts, Reason: "AsExpected"},
		{Type: "Progressing", Status: "False", LastTransitionTime: ts, Reason: "AsExpected"},
		{Type: "Available", Status: "True", LastTransitionTime: ts, Reason: "AsExpected"},
		{Type: "Upgradeable", Status: "True", LastTransitionTime: ts, Reason: "AsExpected"},
	}
	co.Status.Versions = []operandVersion{{Name: "operator", Version: version}, {Name: name, Version: version}}
	return co
}

// SetProgressing sets the Progressing condition of a ClusterOperator.
func (c *Cluster) SetProgressing(ctx context.Context, operator string, progressing bool) error {
	return update(ctx, c.cli, ClusterOperatorKeyPrefix+operator, func(co *clusterOperator) error {
		status, msg := "False", ""
		if progressing {
			status, msg = "True", "NodeInstallerProgressing: 1 node is at revision N; 2 nodes are at revision N+1"
		}
		co.Status.Conditions = setCondition(co.Status.Conditions, condition{Type: "Progressing", Status: status, Message: msg})
		return nil
	})
}

// SetUpgrading starts an upgrade to target the way the cluster-version
// operator records one: a Partial history entry on top and Progressing=True.
func (c *Cluster) SetUpgrading(ctx context.Context, target string) error {
	return update(ctx, c.cli, ClusterVersionKey, func(cv *clusterVersion) error {
		if h := cv.Status.History; len(h) > 0 && h[0].State == "Partial" {
			return fmt.Errorf("an upgrade to %s is already in progress", h[0].Version)
		}
		now := time.Now().UTC().Format(time.RFC3339)
		cv.Status.Desired = release{Version: target, Image: releaseImage(target)}
		cv.Status.History = slices.Insert(cv.Status.History, 0, updateHistory{State: "Partial", StartedTime: now,
			Version: target, Image: releaseImage(target)})
		cv.Status.Conditions = setCondition(cv.Status.Conditions, condition{Type: "Progressing", Status: "True",
			Message: "Working towards " + target})
		return nil
	})
}

// CompleteUpgrade finishes the upgrade SetUpgrading started: the history
// entry becomes Completed, Progressing turns False and every ClusterOperator
// reports the new version.
func (c *Cluster) CompleteUpgrade(ctx context.Context) error {
	var target string
	err := update(ctx, c.cli, ClusterVersionKey, func(cv *clusterVersion) error {
		h := cv.Status.History
		if len(h) == 0 || h[0].State != "Partial" {
			return errors.New("no upgrade in progress")
		}
		now := time.Now().UTC().Format(time.RFC3339)
		target = h[0].Version
		h[0].State, h[0].CompletionTime = "Completed", &now
		cv.Status.Conditions = setCondition(cv.Status.Conditions, condition{Type: "Progressing", Status: "False",
			Message: "Cluster version is " + target})
		return nil
	})
	if err != nil {
		return err
	}
	resp, err := c.cli.Get(ctx, ClusterOperatorKeyPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("list ClusterOperators: %w", err)
	}
	for _, kv := range resp.Kvs {
		err := update(ctx, c.cli, string(kv.Key), func(co *clusterOperator) error {
			for i := range co.Status.Versions {
				co.Status.Versions[i].Version = target
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// update applies change to the JSON object at key. The write is conditional
// on the key's revision so that a concurrent update is an error, not lost.
func update[T any](ctx context.Context, cli *clientv3.Client, key string, change func(*T) error) error {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("update %s: key not found", key)
	}
	var obj T
	if err := json.Unmarshal(resp.Kvs[0].Value, &obj); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	if err := change(&obj); err != nil {
		return fmt.Errorf("update %s: %w", key, err)
	}
	txn, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, string(mustJSON(obj)))).
		Commit()
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("put %s: changed concurrently", key)
	}
	return nil
}

// setCondition replaces the condition of the same type, moving its
// transition time only when the status changes, as the operators do.
func setCondition(conds []condition, cond condition) []condition {
	now := time.Now().UTC().Format(time.RFC3339)
	for i, old := range conds {
		if old.Type != cond.Type {
			continue
		}
		cond.LastTransitionTime = old.LastTransitionTime
		if old.Status != cond.Status {
			cond.LastTransitionTime = now
		}
		conds[i] = cond
		return conds
	}
	cond.LastTransitionTime = now
	return append(conds, cond)
}

// NextVersion returns the next z-stream of version: 4.18.12 -> 4.18.13.
func NextVersion(version string) string {
	i := strings.LastIndex(version, ".")
	if i < 0 {
		return version + ".1"
	}
	z, err := strconv.Atoi(version[i+1:])
	if err != nil {
		return version + ".1"
	}
	return fmt.Sprintf("%s.%d", version[:i], z+1)
}

// minor returns "4.18" for "4.18.12".
func minor(version string) string {
	if parts := strings.SplitN(version, ".", 3); len(parts) >= 2 {
		return parts[0] + "." + parts[1]
	}
	return version
}

func releaseImage(version string) string {
	return fmt.Sprintf("registry.example/openshift-release-dev/ocp-release@sha256:%x", sha256.Sum256([]byte(version)))
}

// mustJSON marshals the fixture's own types, which cannot fail to encode.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("testcluster: marshal %T: %v", v, err))
	}
	return b
}
