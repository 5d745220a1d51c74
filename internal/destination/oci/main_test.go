package oci_test

import (
	"os"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/snapshot"
)

// TestMain lets the test binary act as the child that runs bbolt's check:
// os.Executable is the test binary here.
func TestMain(m *testing.M) {
	snapshot.ServeChild()
	os.Exit(m.Run())
}
