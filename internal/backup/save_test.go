package backup

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// commitWatch is a log handler that notes, when "Snapshot saved at" is
// logged, whether backup.json was already on disk.
type commitWatch struct {
	slog.Handler
	manifest string

	mu     sync.Mutex
	logged bool
	saved  bool // backup.json existed when the line was logged
}

func (h *commitWatch) Enabled(context.Context, slog.Level) bool { return true }

func (h *commitWatch) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "Snapshot saved at ") {
		return nil
	}
	_, err := os.Stat(h.manifest)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logged, h.saved = true, err == nil
	return nil
}

// TestSaveAnnouncesOnlyCommittedBackup: the script's "Snapshot saved at"
// line is a promise that the backup exists, so it follows backup.json.
func TestSaveAnnouncesOnlyCommittedBackup(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	dir := t.TempDir()
	h := &commitWatch{Handler: slog.DiscardHandler, manifest: filepath.Join(dir, manifest.FileName)}
	_, err := Save(t.Context(), Options{Dir: dir, HostRoot: c.HostRoot, NodeName: c.NodeName, Log: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.logged || !h.saved {
		t.Errorf("\"Snapshot saved at\" logged %v, with backup.json already written %v; want it logged after", h.logged, h.saved)
	}
}
