package results

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	rs := []Result{
		{"backup-dir", "/backup"},
		{"snapshot-size", "1234"},
		{"backup-ARTIFACT_OUTPUTS", `{"uri":"gs://b/p"}`},
	}
	if err := Write(dir, rs); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		got, err := os.ReadFile(filepath.Join(dir, r.Name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != r.Value {
			t.Errorf("%s = %q, want %q (verbatim, no newline)", r.Name, got, r.Value)
		}
	}
}

func TestWriteRefuses(t *testing.T) {
	tests := []struct {
		name string
		rs   []Result
	}{
		{"bad name", []Result{{"../escape", "x"}}},
		{"empty name", []Result{{"", "x"}}},
		{"too large", []Result{{"a", strings.Repeat("x", MaxTotal)}, {"b", "y"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := Write(dir, tt.rs); err == nil {
				t.Fatal("Write succeeded")
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("files written despite the error: %v", entries)
			}
		})
	}
}

func TestWriteNoDir(t *testing.T) {
	if err := Write("", []Result{{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
}

func TestCheckDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, want string
	}{
		{"none given", "", ""},
		{"exists", dir, ""},
		{"missing", filepath.Join(dir, "missing"), "does not exist"},
		{"a file", file, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckDir(tt.dir)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.dir) || exitcode.Of(err) != exitcode.Usage {
				t.Fatalf("CheckDir(%s) = %v (exit %d), want a usage error naming it: %q", tt.dir, err, exitcode.Of(err), tt.want)
			}
		})
	}
	if names, _ := os.ReadDir(dir); len(names) != 1 {
		t.Errorf("CheckDir left %v", names)
	}
}
