package logging

import (
	"bytes"
	"encoding/json"
	"regexp"
	"testing"
)

func TestText(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, Text)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("Snapshot saved at /backup/snapshot.db", "size", 42)
	log.With("member", "master-0").Warn("slow disk", "path", "/a b")
	want := regexp.MustCompile(`^\S+Z Snapshot saved at /backup/snapshot.db size=42\n\S+Z WARN slow disk member=master-0 path="/a b"\n$`)
	if !want.Match(buf.Bytes()) {
		t.Errorf("unexpected text log:\n%s", buf.String())
	}
}

func TestJSON(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, JSON)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello", "k", "v")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, buf.String())
	}
	if rec["msg"] != "hello" || rec["k"] != "v" {
		t.Errorf("record %v", rec)
	}
}

func TestUnknownFormat(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, "yaml"); err == nil {
		t.Error("New accepted an unknown format")
	}
}
