package snapshot

import (
	"os"
	"syscall"
	"testing"
)

// killChildEnv makes the child that runs bbolt's check die of SIGKILL
// before it checks, as the kernel's out-of-memory killer does it under a
// pod's memory limit, which a test cannot have on demand otherwise.
const killChildEnv = "ETCD_BACKUP_TEST_KILL_CHILD"

// TestMain lets the test binary act as the child that runs bbolt's check:
// os.Executable is the test binary here.
func TestMain(m *testing.M) {
	if _, child := os.LookupEnv(childEnv); child && os.Getenv(killChildEnv) != "" {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	ServeChild()
	os.Exit(m.Run())
}
