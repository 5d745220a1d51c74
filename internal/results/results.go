// Package results writes step results for Tekton and Argo: one file per
// result in a directory, named for the result, holding the value verbatim
// with no trailing newline (Tekton keeps whitespace; Argo trims one newline).
package results

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// MaxTotal bounds the size of all results of one step together: Tekton passes
// them in the container's termination message, which holds 4 KiB in all.
const MaxTotal = 3 << 10

// Result is one named value.
type Result struct {
	Name  string
	Value string
}

// Tekton's result name pattern; Argo's parameter names are a superset.
var validName = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]$`)

// Write writes rs into dir. An empty dir writes nothing: results are optional.
// Names and the total size are checked before any file is written.
func Write(dir string, rs []Result) error {
	if dir == "" {
		return nil
	}
	total := 0
	for _, r := range rs {
		if !validName.MatchString(r.Name) {
			return fmt.Errorf("result name %q is not a valid Tekton result name", r.Name)
		}
		total += len(r.Value)
	}
	if total > MaxTotal {
		return fmt.Errorf("results total %d bytes, more than the %d a step may emit", total, MaxTotal)
	}
	for _, r := range rs {
		path := filepath.Join(dir, r.Name)
		if err := os.WriteFile(path, []byte(r.Value), 0o600); err != nil {
			return fmt.Errorf("write result %s: %w", r.Name, err)
		}
	}
	return nil
}

// CheckDir proves that dir takes result files, so that a command fails before
// it does any work, not after a backup was committed or an object uploaded.
// An empty dir is fine: results are optional. The error is a usage error.
func CheckDir(dir string) error {
	if dir == "" {
		return nil
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return exitcode.With(exitcode.Usage, fmt.Errorf("--results-dir %s does not exist: create it or give an existing directory", dir))
	case err != nil:
		return exitcode.With(exitcode.Usage, fmt.Errorf("--results-dir: %w", err))
	case !fi.IsDir():
		return exitcode.With(exitcode.Usage, fmt.Errorf("--results-dir %s is not a directory", dir))
	}
	if err := atomicfile.Writable(dir); err != nil {
		return exitcode.With(exitcode.Usage, fmt.Errorf("--results-dir %s is not writable: %w", dir, err))
	}
	return nil
}
