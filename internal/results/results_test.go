package results

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
