package testcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// tree writes files under root and remembers the first error, so that the
// layout code reads as a list of files rather than a list of error checks.
type tree struct {
	root string
	err  error
}

// file writes data at rel with exactly mode, whatever the umask.
func (t *tree) file(rel string, mode os.FileMode, data []byte) {
	if t.err != nil {
		return
	}
	path := t.mkparent(rel)
	if t.err != nil {
		return
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.err = fmt.Errorf("write %s: %w", path, err)
		return
	}
	if err := os.Chmod(path, mode); err != nil {
		t.err = fmt.Errorf("chmod %s: %w", path, err)
	}
}

// symlink makes rel point at target, verbatim.
func (t *tree) symlink(rel, target string) {
	if t.err != nil {
		return
	}
	path := t.mkparent(rel)
	if t.err != nil {
		return
	}
	if err := os.Symlink(target, path); err != nil {
		t.err = fmt.Errorf("symlink %s: %w", path, err)
	}
}

// touch sets the modification time of rel.
func (t *tree) touch(rel string, mtime time.Time) {
	if t.err != nil {
		return
	}
	path := filepath.Join(t.root, rel)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.err = fmt.Errorf("set times of %s: %w", path, err)
	}
}

func (t *tree) path(rel string) string {
	return filepath.Join(t.root, rel)
}

func (t *tree) mkparent(rel string) string {
	path := filepath.Join(t.root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.err = fmt.Errorf("create directory for %s: %w", path, err)
	}
	return path
}
