// Package openshift reads the OpenShift objects a backup cares about straight
// from their etcd keys, so no API server is needed: custom resources are
// stored in etcd as plain JSON.
package openshift

import (
	"encoding/json"
	"fmt"
	"time"
)

// Keys of the objects in etcd.
const (
	ClusterVersionKey        = "/kubernetes.io/config.openshift.io/clusterversions/version"
	clusterOperatorKeyPrefix = "/kubernetes.io/config.openshift.io/clusteroperators/"
)

// ClusterOperatorKey is the etcd key of the named ClusterOperator.
func ClusterOperatorKey(name string) string { return clusterOperatorKeyPrefix + name }

// Condition is a status condition as OpenShift's config API writes it.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// ClusterVersion is the part of config.openshift.io/v1 ClusterVersion read here.
type ClusterVersion struct {
	Metadata struct {
		CreationTimestamp time.Time `json:"creationTimestamp"`
	} `json:"metadata"`
	Spec struct {
		ClusterID string `json:"clusterID"`
	} `json:"spec"`
	Status struct {
		Desired struct {
			Version string `json:"version"`
		} `json:"desired"`
		History    []Update    `json:"history"`
		Conditions []Condition `json:"conditions"`
	} `json:"status"`
}

// Update is one entry of the ClusterVersion history, newest first.
type Update struct {
	State   string `json:"state"` // Completed or Partial
	Version string `json:"version"`
}

// ParseClusterVersion decodes the JSON stored at ClusterVersionKey.
func ParseClusterVersion(data []byte) (*ClusterVersion, error) {
	var cv ClusterVersion
	if err := json.Unmarshal(data, &cv); err != nil {
		return nil, fmt.Errorf("decode ClusterVersion: %w", err)
	}
	return &cv, nil
}

// Version is the version the cluster fully runs: the newest completed update.
func (cv *ClusterVersion) Version() string {
	for _, u := range cv.Status.History {
		if u.State == "Completed" {
			return u.Version
		}
	}
	return ""
}

// Upgrading reports whether an update is under way, and a line saying which.
func (cv *ClusterVersion) Upgrading() (bool, string) {
	if h := cv.Status.History; len(h) > 0 && h[0].State != "Completed" {
		return true, fmt.Sprintf("update to %s is %s", h[0].Version, h[0].State)
	}
	if c := condition(cv.Status.Conditions, "Progressing"); c != nil && c.Status != "False" {
		return true, fmt.Sprintf("ClusterVersion is Progressing=%s: %s", c.Status, c.Message)
	}
	return false, ""
}

// Completed reports whether version is the newest completed update and
// nothing else is under way: the point after an upgrade to back up at.
func (cv *ClusterVersion) Completed(version string) bool {
	upgrading, _ := cv.Upgrading()
	return !upgrading && cv.Version() == version
}

// ClusterOperator is the part of config.openshift.io/v1 ClusterOperator read here.
type ClusterOperator struct {
	Status struct {
		Conditions []Condition `json:"conditions"`
	} `json:"status"`
}

// ParseClusterOperator decodes the JSON stored at ClusterOperatorKey(name).
func ParseClusterOperator(data []byte) (*ClusterOperator, error) {
	var co ClusterOperator
	if err := json.Unmarshal(data, &co); err != nil {
		return nil, fmt.Errorf("decode ClusterOperator: %w", err)
	}
	return &co, nil
}

// Progressing reports the Progressing condition: true unless it is
// present and False, as cluster-backup.sh treats it.
func (co *ClusterOperator) Progressing() (bool, string) {
	c := condition(co.Status.Conditions, "Progressing")
	if c == nil {
		return true, "no Progressing condition"
	}
	if c.Status == "False" {
		return false, ""
	}
	return true, fmt.Sprintf("Progressing=%s: %s", c.Status, c.Message)
}

func condition(cs []Condition, typ string) *Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}
