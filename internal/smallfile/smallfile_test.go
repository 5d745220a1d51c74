package smallfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRead: a file up to the bound is read whole; one byte over is
// ErrTooLarge, as is a device that never ends; a missing path and a
// directory are the file system's errors, naming the path once.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, bytes.Repeat([]byte("k"), n), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	const limit = 64
	cases := []struct {
		path string
		want int    // bytes read, when err is nil
		err  error  // errors.Is
		says string // in the error, once
	}{
		{write("empty", 0), 0, nil, ""},
		{write("at", limit), limit, nil, ""},
		{write("over", limit+1), 0, ErrTooLarge, ""},
		{"/dev/zero", 0, ErrTooLarge, ""},
		{filepath.Join(dir, "missing"), 0, fs.ErrNotExist, filepath.Join(dir, "missing")},
		{dir, 0, nil, dir + ": is a directory"},
	}
	for _, c := range cases {
		data, err := Read(c.path, limit)
		switch {
		case c.err == nil && c.says == "":
			if err != nil || len(data) != c.want {
				t.Errorf("Read(%s) = %d bytes, %v; want %d bytes", c.path, len(data), err, c.want)
			}
		case c.err != nil && !errors.Is(err, c.err), err == nil:
			t.Errorf("Read(%s) = %v, want %v", c.path, err, c.err)
		case c.says != "" && strings.Count(err.Error(), c.path) != 1, !strings.Contains(err.Error(), c.says):
			t.Errorf("Read(%s) = %v, want it to say %q, naming the path once", c.path, err, c.says)
		}
	}
}
