// Package smallfile reads files that are small by nature: keys,
// credentials, the metrics file. A path that names something else by
// mistake (a snapshot, a device) is refused at a bound rather than read
// whole into memory, and a directory is named as such, with the file to
// give in its place when it holds one.
package smallfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrTooLarge is returned by Read for a file over its bound; the caller
// says what the file should have been.
var ErrTooLarge = errors.New("too large")

// DirError is why a directory cannot be read as a file. Most often it is
// the mount path of a Secret or ConfigMap, given for the key in it.
type DirError struct {
	// File is the one file the directory holds, "" unless it holds one.
	File string
}

func (e DirError) Error() string {
	if e.File == "" {
		return "is a directory"
	}
	return "is a directory; give the file in it, " + e.File
}

// Is makes a DirError the file system's own error for a directory.
func (DirError) Is(target error) bool { return target == syscall.EISDIR }

// Read returns the contents of the file at path, or ErrTooLarge when it
// holds more than limit bytes. Its other errors are *fs.PathError, naming
// path: the file system's, and a DirError for a directory.
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, &fs.PathError{Op: "read", Path: path, Err: DirError{File: onlyFile(path)}}
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, ErrTooLarge
	}
	return data, nil
}

// onlyFile returns the path of the one file in dir, or "". A Secret or
// ConfigMap volume also holds "..data" and a "..<timestamp>" directory,
// through which its keys are links: those are not counted.
func onlyFile(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	found := ""
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if found != "" {
			return ""
		}
		found = path
	}
	return found
}
