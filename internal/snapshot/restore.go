package snapshot

import (
	"context"
	"fmt"
	"path/filepath"

	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const (
	// restoreName and restorePeer name the single member of the trial
	// restore. Nothing ever listens on the peer URL: restore only records it.
	restoreName  = "restore-check"
	restorePeer  = "http://127.0.0.1:2380"
	restoreToken = "etcd-backup-restore-check"
)

// Restore runs a trial restore of the snapshot at snapshotPath into dataDir
// with the code behind `etcdutl snapshot restore`, the hash check on, as
// cluster-restore.sh would run it. dataDir must be missing or empty. It
// returns the Status of the restored member's database, for comparison with
// what was recorded at save.
//
// The snapshot is checked first: etcd's storage code reads a corrupt
// database in goroutines of its own, where a panic ends the process.
func Restore(ctx context.Context, snapshotPath, dataDir string) (Status, error) {
	if _, err := Check(ctx, snapshotPath); err != nil {
		return Status{}, fmt.Errorf("trial restore: %w", err)
	}
	if err := restore(snapshotPath, dataDir); err != nil {
		return Status{}, fmt.Errorf("trial restore of %s: %w", snapshotPath, err)
	}
	// etcdutl names the member's database member/snap/db.
	st, err := Check(ctx, filepath.Join(dataDir, "member", "snap", "db"))
	if err != nil {
		return Status{}, fmt.Errorf("trial restore: %w", err)
	}
	return st, nil
}

func restore(snapshotPath, dataDir string) (err error) {
	// etcd's storage code panics, or calls Fatal, on a database it cannot
	// open or write; a failed trial must be an error, not the end of the
	// process.
	lg := zap.New(zapcore.NewNopCore(), zap.WithFatalHook(zapcore.WriteThenPanic))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("etcd restore gave up: %v", p)
		}
	}()
	return etcdutl.NewV3(lg).Restore(etcdutl.RestoreConfig{
		SnapshotPath:        snapshotPath,
		Name:                restoreName,
		OutputDataDir:       dataDir,
		PeerURLs:            []string{restorePeer},
		InitialCluster:      restoreName + "=" + restorePeer,
		InitialClusterToken: restoreToken,
	})
}
