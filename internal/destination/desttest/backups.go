// Package desttest is the conformance suite every kind of destination
// passes, and the real backups it runs on.
package desttest

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/backup"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// Backup is a real backup on disk.
type Backup struct {
	Dir      string
	Manifest *manifest.Backup
}

// Log sends a test's logs to its output.
func Log(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// Save takes three real backups of one test cluster: the first an hour
// before the other two, which share a second and differ in content.
func Save(t testing.TB) []Backup {
	t.Helper()
	base := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	return SaveAt(t, base, base.Add(time.Hour), base.Add(time.Hour))
}

// SaveAt takes a real backup of one test cluster at each time, each with
// content of its own.
func SaveAt(t testing.TB, times ...time.Time) []Backup {
	t.Helper()
	shots := make([]Shot, len(times))
	for i, at := range times {
		shots[i] = Shot{At: at}
	}
	return Take(t, shots...)
}

// Shot is a backup to take: when, and whether with --force.
type Shot struct {
	At    time.Time
	Force bool
}

// Take takes a real backup of one test cluster for each shot, each with
// content of its own.
func Take(t testing.TB, shots ...Shot) []Backup {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{Keys: 50})
	cli, err := c.Client(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var out []Backup
	for i, shot := range shots {
		if _, err := cli.Put(t.Context(), fmt.Sprintf("/desttest/%d", i), "x"); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "backup")
		res, err := backup.Save(t.Context(), backup.Options{
			Dir: dir, HostRoot: c.HostRoot, NodeName: c.NodeName,
			MinClusterAge: 24 * time.Hour, RequestTimeout: 10 * time.Second,
			WaitTimeout: time.Minute, PollInterval: time.Second, ProgressInterval: time.Second, StallTimeout: time.Minute,
			Force: shot.Force, Log: Log(t), Now: func() time.Time { return shot.At },
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Backup{Dir: dir, Manifest: res.Manifest})
	}
	return out
}
