package oci_test

import (
	"log/slog"
	"os"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/destination/oci"
	"github.com/etcd-backup/etcd-backup/internal/snapshot"
)

// TestMain lets the test binary act as the child that runs bbolt's check:
// os.Executable is the test binary here. It takes containers/image's log
// over, as the command does, so that a Dest learns of a registry's 429s.
func TestMain(m *testing.M) {
	snapshot.ServeChild()
	oci.CaptureLibraryLog(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
