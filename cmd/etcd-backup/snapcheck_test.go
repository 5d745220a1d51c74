package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/snapshot/snapshottest"
)

// TestVerifyDamagedReferences runs `verify DIR` as its own process on
// backups whose snapshot has a damaged page reference under a trailer and a
// backup.json that match: the process died of a stack overflow, or of a
// fault in bbolt's check, with exit 2. It must refuse the backup (exit 4).
func TestVerifyDamagedReferences(t *testing.T) {
	good, _ := savedBackup(t, 200)
	tests := []struct {
		name   string
		damage snapshottest.Damage
	}{
		{name: "cycle", damage: snapshottest.Cycle},
		{name: "shared page", damage: snapshottest.SharedPage},
	}
	for _, tt := range tests {
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
		})
	}
}
