package manifest

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func sample() *Backup {
	ts := "2026-11-23_231059"
	return &Backup{
		SchemaVersion: SchemaVersion,
		Tool:          Tool{Name: "etcd-backup", Version: "dev"},
		CreatedAt:     time.Date(2026, 11, 23, 23, 10, 59, 0, time.UTC),
		Timestamp:     ts,
		Cluster:       Cluster{ID: "c0ffee", Platform: "openshift"},
		Etcd:          Etcd{ClusterID: "abc", Revision: 42, KeyCount: 7},
		Files: []File{
			{Name: SnapshotName(ts, false), Kind: KindSnapshot, Size: 4128, Mode: "0600", SHA256: strings.Repeat("a", 64), CRC32C: 1},
			{Name: ResourcesName(ts, false), Kind: KindResources, Size: 100, Mode: "0600", SHA256: strings.Repeat("b", 64), CRC32C: 2},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	data, err := Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if b.Etcd.Revision != 42 || b.File(KindSnapshot).Size != 4128 || b.Size() != 4228 || b.ClusterKey() != "c0ffee" {
		t.Errorf("round trip lost data: %+v", b)
	}
}

func stored() *Stored {
	return &Stored{Encryption: "age", Recipients: []string{"age1example"}, Size: 4400, SHA256: strings.Repeat("c", 64), CRC32C: 3}
}

// TestStoredRoundTrip: an encrypted file keeps its plaintext record, and
// Content is what the destination holds.
func TestStoredRoundTrip(t *testing.T) {
	b := sample()
	b.SchemaVersion = SchemaStored
	b.Files[0].Stored = stored()
	data, err := Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	snap := *got.File(KindSnapshot)
	if !got.Encrypted() || snap.Size != 4128 || snap.Content().Size != 4400 || snap.Content().SHA256 != strings.Repeat("c", 64) || snap.Content().Stored != nil {
		t.Fatalf("stored file after a round trip: %+v, content %+v", snap, snap.Content())
	}
	if res := *got.File(KindResources); res.Content() != res || sample().Encrypted() {
		t.Fatal("a file stored as it is has other content, or a plain backup reads as encrypted")
	}
}

func TestNames(t *testing.T) {
	if got := SnapshotName("2026-01-02_030405", true); got != "snapshot_2026-01-02_030405__POSSIBLY_DIRTY__.db" {
		t.Errorf("dirty snapshot name %q", got)
	}
	if got := ResourcesName("2026-01-02_030405", false); got != "static_kuberesources_2026-01-02_030405.tar.gz" {
		t.Errorf("resources name %q", got)
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Backup)
		want   string
	}{
		{"newer schema", func(b *Backup) { b.SchemaVersion = 99 }, "schemaVersion"},
		{"no schema", func(b *Backup) { b.SchemaVersion = 0 }, "schemaVersion"},
		{"bad timestamp", func(b *Backup) { b.Timestamp = "yesterday" }, "timestamp"},
		{"path in name", func(b *Backup) { b.Files[0].Name = "../../etc/passwd" }, "named"},
		{"name for other ts", func(b *Backup) { b.Files[0].Name = SnapshotName("2020-01-01_000000", false) }, "named"},
		{"dirty mismatch", func(b *Backup) { b.Dirty = true }, "named"},
		{"missing archive", func(b *Backup) { b.Files = b.Files[:1] }, "no resources file"},
		{"duplicate kind", func(b *Backup) { b.Files[1] = b.Files[0] }, "twice"},
		{"unknown kind", func(b *Backup) { b.Files[1].Kind = "secret" }, "unknown kind"},
		{"bad sha", func(b *Backup) { b.Files[0].SHA256 = "XYZ" }, "sha256"},
		{"bad mode", func(b *Backup) { b.Files[0].Mode = "rw" }, "mode"},
		{"negative size", func(b *Backup) { b.Files[0].Size = -1 }, "negative"},
		{"stored in schema 1", func(b *Backup) { b.SchemaVersion = SchemaPlain; b.Files[0].Stored = stored() }, "cannot describe"},
		{"unknown encryption", func(b *Backup) { b.Files[0].Stored = stored(); b.Files[0].Stored.Encryption = "gpg" }, "cannot read"},
		{"no recipients", func(b *Backup) { b.Files[0].Stored = stored(); b.Files[0].Stored.Recipients = nil }, "no recipient"},
		{"bad stored sha", func(b *Backup) { b.Files[0].Stored = stored(); b.Files[0].Stored.SHA256 = "x" }, "stored size or sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := sample()
			tt.mutate(b)
			err := b.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error about %q", err, tt.want)
			}
			if _, err := Marshal(b); err == nil {
				t.Error("Marshal wrote an invalid manifest")
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"not json", "snapshot"},
		{"wrong types", `{"schemaVersion":"1"}`},
		{"too large", `{"x":"` + strings.Repeat("a", maxManifestSize) + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(strings.NewReader(tt.in)); err == nil {
				t.Error("Parse accepted it")
			}
		})
	}
}

// FuzzParse: no input panics, and whatever Parse accepts names only plain
// files that Marshal writes back identically.
func FuzzParse(f *testing.F) {
	data, _ := Marshal(sample())
	f.Add(data)
	f.Add([]byte(`{"schemaVersion":1}`))
	f.Add([]byte(`{"schemaVersion":1,"timestamp":"2026-11-23_231059","files":[{"name":"../x","kind":"snapshot"}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := Parse(bytes.NewReader(in))
		if err != nil {
			return
		}
		for _, file := range b.Files {
			if strings.ContainsAny(file.Name, `/\`) || file.Name == ".." {
				t.Fatalf("accepted file name %q", file.Name)
			}
		}
		out, err := Marshal(b)
		if err != nil {
			t.Fatalf("accepted manifest does not marshal: %v", err)
		}
		again, err := Parse(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("marshalled manifest does not parse: %v", err)
		}
		if out2, _ := Marshal(again); !bytes.Equal(out, out2) {
			t.Fatal("marshal is not stable")
		}
	})
}
