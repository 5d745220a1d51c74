package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// childEnv, set to a file's path, makes this program's binary run bbolt's
// consistency check on that file and exit (ServeChild).
const childEnv = "ETCD_BACKUP_BBOLT_CHECK"

const (
	// childFound is the child's exit status when bbolt reports problems;
	// the Go runtime exits 2 on a panic or a fatal error.
	childFound = 10
	// childMaxStack bounds the child's goroutine stacks far below the
	// runtime's 1 GB, so that bbolt recursing through a cycle fails fast
	// and small. bbolt's own recursion is a few frames per tree level.
	childMaxStack = 64 << 20
	// childOutput bounds what is kept of the child's stdout and stderr: a
	// crash prints every goroutine's stack.
	childOutput = 4 << 10
	// childWaitDelay bounds the wait for the child's output once it is
	// killed.
	childWaitDelay = 5 * time.Second
)

// ServeChild makes this process the child that runs bbolt's check, if it
// was started as one: it then checks the file and exits. Otherwise it
// returns at once. main, and TestMain of every test binary that reaches
// Check, call it before anything else.
func ServeChild() {
	path, ok := os.LookupEnv(childEnv)
	if !ok {
		return
	}
	// A Ctrl-C reaches the whole process group: the child must not die of
	// it before the parent, or its death would read as a crash. The parent
	// kills it when it gives up.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	problems, err := boltCheck(path)
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	case problems != "":
		fmt.Fprintln(os.Stdout, problems)
		os.Exit(childFound)
	}
	os.Exit(0)
}

// boltCheck runs bbolt's consistency check on the database at path and
// describes what it found; "" means nothing.
func boltCheck(path string) (string, error) {
	debug.SetMaxStack(childMaxStack)
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: openTimeout})
	if err != nil {
		return "", err
	}
	defer db.Close()
	tx, err := db.Begin(false)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	return describe(tx.Check()), nil
}

// maxReported bounds how many bbolt findings are quoted.
const maxReported = 3

// describe drains the findings of bbolt's check. It must read them all: the
// checker reads the mapping until it closes the channel.
func describe(problems <-chan error) string {
	var found []string
	n := 0
	for err := range problems {
		if n < maxReported {
			found = append(found, err.Error())
		}
		n++
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("bbolt check found %d problems: %s", n, strings.Join(found, "; "))
}

// checkInChild runs bbolt's consistency check on the database at path in a
// child process of this program's binary: bbolt checks in goroutines of its
// own, where a damaged page can end the process with a fault, a nil
// dereference or a stack overflow that no recover catches. The child's
// crash is then the database's fault, and ErrCorrupt. ctx bounds the child,
// which is killed when ctx ends.
func checkInChild(ctx context.Context, path string) error {
	if _, ok := os.LookupEnv(childEnv); ok {
		// A binary that does not call ServeChild would run as itself
		// again, and start children of its own.
		return fmt.Errorf("bbolt check: %s is set, but this binary did not act on it: ServeChild must come first in main", childEnv)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bbolt check: find this program's binary: %w", err)
	}
	var stdout, stderr headBuffer
	cmd := exec.CommandContext(ctx, exe)
	// A race-enabled build, as tests run, sleeps a second at exit unless
	// told not to; other builds ignore GORACE.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), childEnv+"="+path, "GORACE="+gorace)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = childWaitDelay
	err = cmd.Run()
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &exit):
		return fmt.Errorf("bbolt check: run %s: %w", exe, err)
	case exit.ExitCode() == childFound:
		return fmt.Errorf("%w: %s", ErrCorrupt, strings.TrimSpace(stdout.String()))
	case exit.ExitCode() == 1:
		// The child failed before it could check: not the file's fault.
		return fmt.Errorf("bbolt check: %s", firstLine(stderr.Bytes()))
	case starved(exit):
		return fmt.Errorf("bbolt check: %v (%s), most likely for want of memory, which says nothing about the snapshot: under a memory limit (a pod's), give the check about 20 MiB per GiB of database besides the rest", err, firstLine(stderr.Bytes()))
	default:
		return fmt.Errorf("%w: its structure crashed bbolt's consistency check (%v: %s)", ErrCorrupt, err, firstLine(stderr.Bytes()))
	}
}

// starved reports whether the child died for want of memory, not of the
// file's content. Nothing in a file makes the child die of a signal (a
// fault in Go code is a panic, exit 2): the kernel's out-of-memory killer,
// under a pod's memory limit, sends SIGKILL.
func starved(exit *exec.ExitError) bool {
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// firstLine returns the first line of out that is not empty: the runtime's
// "panic: ..." or "fatal error: ..." before the goroutine stacks.
func firstLine(out []byte) string {
	for line := range strings.Lines(string(out)) {
		if line = strings.TrimSpace(line); line != "" {
			return line
		}
	}
	return "no output"
}

// headBuffer keeps the first childOutput bytes written to it and discards
// the rest, so that the child never blocks on a full pipe.
type headBuffer struct{ bytes.Buffer }

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := childOutput - h.Len(); room > 0 {
		h.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
