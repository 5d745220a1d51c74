package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/snapshot/snapshottest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// damages are the damaged page references that crashed the process.
var damages = []struct {
	name   string
	damage snapshottest.Damage
}{
	{name: "cycle", damage: snapshottest.Cycle},
	{name: "shared page", damage: snapshottest.SharedPage},
}

// TestVerifyDamagedReferences runs `verify DIR` as its own process on
// backups whose snapshot has a damaged page reference under a trailer and a
// backup.json that match: the process died of a stack overflow, or of a
// fault in bbolt's check, with exit 2. It must refuse the backup (exit 4).
func TestVerifyDamagedReferences(t *testing.T) {
	good, _ := savedBackup(t, 200)
	for _, tt := range damages {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyBackup(t, good)
			if _, err := snapshottest.DamageBackup(dir, tt.damage); err != nil {
				t.Fatal(err)
			}
			out, err := selfCommand(t.Context(), "verify", dir).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitcode.Verify || !strings.Contains(string(out), "referenced twice") {
				t.Fatalf("verify: %v, want exit %d naming the page referenced twice:\n%s", err, exitcode.Verify, out)
			}
			assertNamedOnce(t, string(out))
		})
	}
}

// TestSaveDamagedMember damages the running member's own database on disk,
// as a failing disk would, where etcd does not read it again: the member
// then serves a snapshot whose trailer matches the damage. save must refuse
// it with exit 4 and leave no file behind; before, the process died in the
// check, its clean-up never ran, and the .part files stayed.
func TestSaveDamagedMember(t *testing.T) {
	for _, tt := range damages {
		t.Run(tt.name, func(t *testing.T) {
			m := newMaster(t, testcluster.Options{Keys: 200})
			damageMember(t, m, tt.damage)
			dir := t.TempDir()
			code, stderr := m.save(t, dir)
			if code != exitcode.Verify || !strings.Contains(stderr, "referenced twice") {
				t.Fatalf("save: exit %d, want %d naming the page referenced twice:\n%s", code, exitcode.Verify, stderr)
			}
			assertNamedOnce(t, stderr)
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("save left %v", names)
			}
		})
	}
}

// assertNamedOnce checks that each error line names the snapshot once: the
// check names it, and nothing above it names it again.
func assertNamedOnce(t *testing.T, log string) {
	t.Helper()
	for line := range strings.Lines(log) {
		if n := strings.Count(line, "snapshot_"); strings.Contains(line, "ERROR") && n != 1 {
			t.Errorf("the error names the snapshot %d times, want once: %s", n, line)
		}
	}
}

// damageMember applies d to the database file of m's member.
func damageMember(t *testing.T, m *master, d snapshottest.Damage) {
	t.Helper()
	// Nothing writes after the seed: once its last batch is on disk, the
	// pages stay where they are.
	m.Etcd.Server.Backend().ForceCommit()
	path := filepath.Join(m.Etcd.Config().Dir, "member", "snap", "db")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off, root, err := snapshottest.Locate(data, d)
	if err != nil {
		t.Fatal(err)
	}
	ref := make([]byte, 8)
	snapshottest.Put(ref, root)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt(ref, int64(off))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}
