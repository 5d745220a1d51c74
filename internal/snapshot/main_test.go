package snapshot

import (
	"os"
	"testing"
)

// TestMain lets the test binary act as the child that runs bbolt's check:
// os.Executable is the test binary here.
func TestMain(m *testing.M) {
	ServeChild()
	os.Exit(m.Run())
}
