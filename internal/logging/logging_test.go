package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
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

// TestHiddenQueries: the query of a URL in a line, such as the signature of
// the presigned URL a registry sends a download to, is left out of the
// message and of every value, in both formats; the rest of the line and
// URLs without a query are as they were.
func TestHiddenQueries(t *testing.T) {
	const signed = `https://bucket.s3.amazonaws.com/docker/blobs/data?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=SECRETSIG`
	err := fmt.Errorf("read snapshot.db from docker://mirror/etcd: Get %q: dial tcp: connection refused", signed)
	for _, format := range []string{Text, JSON} {
		var buf bytes.Buffer
		log, lerr := New(&buf, format)
		if lerr != nil {
			t.Fatal(lerr)
		}
		log.Error(err.Error())
		log.Warn("send failed; retrying", "error", err, "url", signed, "plain", "https://mirror/v2/")
		out := buf.String()
		if strings.Contains(out, "SECRETSIG") || strings.Contains(out, "AKIAEXAMPLE") {
			t.Errorf("%s: a URL's query is logged:\n%s", format, out)
		}
		if strings.Count(out, "bucket.s3.amazonaws.com/docker/blobs/data?…") != 3 || !strings.Contains(out, "https://mirror/v2/") || !strings.Contains(out, "connection refused") {
			t.Errorf("%s: the rest of the line is not as it was:\n%s", format, out)
		}
	}
}
