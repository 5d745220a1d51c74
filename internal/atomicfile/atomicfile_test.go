package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCommit(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "a.db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("final name visible before commit: %v", err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != Mode {
		t.Errorf("mode %v, want %v", fi.Mode().Perm(), Mode)
	}
	if _, err := os.Stat(f.PartPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf(".part left behind: %v", err)
	}
	f.Abort() // no-op after commit
	if _, err := os.Stat(filepath.Join(dir, "a.db")); err != nil {
		t.Errorf("Abort after Commit removed the file: %v", err)
	}
}

func TestAbortRemovesPart(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "a.db")
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("partial"))
	f.Abort()
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("directory not empty after Abort: %v", entries)
	}
}

func TestNeverReplaces(t *testing.T) {
	tests := []struct {
		name     string
		existing string
	}{
		{"final exists", "a.db"},
		{"part exists", "a.db.part"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tt.existing)
			if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Create(dir, "a.db"); err == nil {
				t.Fatal("Create succeeded over an existing file")
			}
			if got, _ := os.ReadFile(path); string(got) != "old" {
				t.Errorf("existing file changed: %q", got)
			}
		})
	}
}

// TestCreateErrors: what Create cannot do names the path once, with the
// error to test for.
func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.db.part"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dir, name, path string // path: what the error names
		err             error
	}{
		{dir, "file", file, fs.ErrExist},
		{dir, "b.db", filepath.Join(dir, "b.db.part"), fs.ErrExist},
		{filepath.Join(dir, "missing"), "a.db", filepath.Join(dir, "missing", "a.db.part"), fs.ErrNotExist},
		{file, "a.db", filepath.Join(file, "a.db"), unix.ENOTDIR},
	}
	for _, tt := range tests {
		_, err := Create(tt.dir, tt.name)
		if !errors.Is(err, tt.err) || strings.Count(err.Error(), tt.path) != 1 {
			t.Errorf("Create(%s, %s) = %v, want %v naming %s once", tt.dir, tt.name, err, tt.err, tt.path)
		}
	}
}

func TestCommitRefusesRacingFinal(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "a.db")
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("new"))
	final := filepath.Join(dir, "a.db")
	if err := os.WriteFile(final, []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err == nil {
		t.Fatal("Commit replaced a file that appeared meanwhile")
	}
	if got, _ := os.ReadFile(final); string(got) != "other" {
		t.Errorf("racing file changed: %q", got)
	}
	if _, err := os.Stat(f.PartPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf(".part left behind after failed commit: %v", err)
	}
}

// TestCommitWithoutHardLinks stands for FAT and exFAT, where link fails
// with EPERM: the file still takes its name, and still never replaces one
// that appeared meanwhile.
func TestCommitWithoutHardLinks(t *testing.T) {
	for _, racing := range []bool{false, true} {
		t.Run(fmt.Sprintf("racing=%v", racing), func(t *testing.T) {
			dir := t.TempDir()
			f, err := Create(dir, "a.db")
			if err != nil {
				t.Fatal(err)
			}
			f.link = func(oldname, newname string) error {
				return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: unix.EPERM}
			}
			f.Write([]byte("new"))
			final := filepath.Join(dir, "a.db")
			want := "new"
			if racing {
				want = "other"
				if err := os.WriteFile(final, []byte(want), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err = f.Commit()
			if racing != (err != nil) {
				t.Fatalf("Commit: %v", err)
			}
			if got, _ := os.ReadFile(final); string(got) != want {
				t.Errorf("%s holds %q, want %q", final, got, want)
			}
			if _, err := os.Stat(f.PartPath()); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf(".part left behind: %v", err)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(dir, "x.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "x.json")); string(got) != "{}" {
		t.Errorf("content %q", got)
	}
	if err := WriteFile(filepath.Join(dir, "missing"), "x.json", nil); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}

// TestLargeWrite crosses several writeback chunks: starting writeback early
// must not change what ends up in the file.
func TestLargeWrite(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "big")
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 1<<20)
	for i := range 3 * writebackChunk / len(block) {
		for j := range block {
			block[j] = byte(i)
		}
		if _, err := f.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3*writebackChunk {
		t.Fatalf("size %d", len(got))
	}
	for i := 0; i < len(got); i += len(block) {
		if got[i] != byte(i/len(block)) || got[i+len(block)-1] != byte(i/len(block)) {
			t.Fatalf("block at %d holds %d", i, got[i])
		}
	}
}

func TestReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.prom")
	for _, content := range []string{"first\n", "second\n"} {
		if err := Replace(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("mode %v, want 0644", fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left beside it: %v", entries)
	}
	if err := Replace(filepath.Join(dir, "none", "m.prom"), nil, 0o644); err == nil || !strings.Contains(err.Error(), "none/m.prom") {
		t.Errorf("missing directory: %v", err)
	}
}
