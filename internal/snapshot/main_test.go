package snapshot

import (
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// starveEnv makes the child that runs bbolt's check die for want of memory
// before it checks: "kill" as the kernel's out-of-memory killer does it
// under a pod's memory limit, "exhaust" as the runtime does when memory
// cannot be had. A test cannot have either on demand otherwise.
const starveEnv = "ETCD_BACKUP_TEST_STARVE_CHILD"

// TestMain lets the test binary act as the child that runs bbolt's check:
// os.Executable is the test binary here.
func TestMain(m *testing.M) {
	if _, child := os.LookupEnv(childEnv); child {
		starve(os.Getenv(starveEnv))
	}
	ServeChild()
	os.Exit(m.Run())
}

func starve(how string) {
	switch how {
	case "kill":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "exhaust":
		const limit = 1 << 30
		if err := unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
			panic(err)
		}
		hog = make([]byte, 2*limit)
	}
}

// hog keeps what starve allocates reachable.
var hog []byte
