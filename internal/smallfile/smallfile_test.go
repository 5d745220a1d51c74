package smallfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRead: a file up to the bound is read whole; one byte over is
// ErrTooLarge, as is a device that never ends; a missing path and a
// directory are the file system's errors, naming the path once; a
// directory that holds one file, as a Secret's mount path does, names
// that file too.
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
	empty := t.TempDir()
	// A Secret's volume: its one key is a link through ..data into a
	// directory named for the time it was written.
	secret := t.TempDir()
	if err := os.Mkdir(filepath.Join(secret, "..2026_12_05_04_40_00.1"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, link := range [][2]string{{"..2026_12_05_04_40_00.1", "..data"}, {"..data/.dockerconfigjson", ".dockerconfigjson"}} {
		if err := os.Symlink(link[0], filepath.Join(secret, link[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(secret, "..data", ".dockerconfigjson"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		want int    // bytes read, when err is nil
		err  error  // errors.Is
		says string // the end of the error, which names the path once
	}{
		{write("empty", 0), 0, nil, ""},
		{write("at", limit), limit, nil, ""},
		{write("over", limit+1), 0, ErrTooLarge, ""},
		{"/dev/zero", 0, ErrTooLarge, ""},
		{filepath.Join(dir, "missing"), 0, fs.ErrNotExist, filepath.Join(dir, "missing") + ": no such file or directory"},
		{empty, 0, syscall.EISDIR, empty + ": is a directory"},
		{dir, 0, syscall.EISDIR, dir + ": is a directory"},
		{secret, 0, syscall.EISDIR, secret + ": is a directory; give the file in it, " + filepath.Join(secret, ".dockerconfigjson")},
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
		case c.says != "" && strings.Count(err.Error(), c.path+": ") != 1, !strings.HasSuffix(err.Error(), c.says):
			t.Errorf("Read(%s) = %v, want it to say %q, naming the path once", c.path, err, c.says)
		}
	}
}
