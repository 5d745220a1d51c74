package snapshot

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// boltFile writes a bbolt database holding the given buckets and entries.
func boltFile(t *testing.T, buckets map[string]map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for name, entries := range buckets {
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			for k, v := range entries {
				if err := b.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCheckNotEtcd covers files that bbolt accepts, or not, but that are not
// etcd databases; real snapshots are covered by TestEtcdSnapshot.
func TestCheckNotEtcd(t *testing.T) {
	rev := string(mvcc.RevToBytes(mvcc.Revision{Main: 2}, mvcc.NewRevBytes()))
	key, meta := schema.Key.String(), schema.Meta.String()
	tests := []struct {
		name    string
		path    string
		wantErr error
	}{
		{name: "missing", path: filepath.Join(t.TempDir(), "missing.db"), wantErr: fs.ErrNotExist},
		{name: "not bbolt", path: writeFile(t, "random.db", stream(8192)), wantErr: ErrCorrupt},
		{name: "other buckets", path: boltFile(t, map[string]map[string]string{"foo": {"a": "b"}}), wantErr: ErrCorrupt},
		{name: "no meta bucket", path: boltFile(t, map[string]map[string]string{key: {}}), wantErr: ErrCorrupt},
		{
			name:    "malformed revision",
			path:    boltFile(t, map[string]map[string]string{key: {"x": ""}, meta: {}}),
			wantErr: ErrCorrupt,
		},
		{
			name:    "malformed record",
			path:    boltFile(t, map[string]map[string]string{key: {rev: "\xff"}, meta: {}}),
			wantErr: ErrCorrupt,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Check(t.Context(), tt.path); !errors.Is(err, tt.wantErr) {
				t.Errorf("Check() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
