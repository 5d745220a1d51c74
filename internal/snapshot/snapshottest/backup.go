package snapshottest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// DamageBackup applies d to the snapshot of the backup in dir and rewrites
// its backup.json to match, as save would have written them from a member
// whose own database carries the damage. It returns the new backup.json.
func DamageBackup(dir string, d Damage) (*manifest.Backup, error) {
	mpath := filepath.Join(dir, manifest.FileName)
	data, err := os.ReadFile(mpath)
	if err != nil {
		return nil, err
	}
	b, err := manifest.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	snap := b.File(manifest.KindSnapshot)
	path := filepath.Join(dir, snap.Name)
	if data, err = os.ReadFile(path); err != nil {
		return nil, err
	}
	if err := Apply(data, d); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}
	digest := manifest.NewDigest()
	digest.Write(data)
	snap.SHA256, snap.CRC32C = digest.SHA256(), digest.CRC32C()
	b.Etcd.SnapshotSHA256 = hex.EncodeToString(data[len(data)-sha256.Size:])
	if data, err = manifest.Marshal(b); err != nil {
		return nil, err
	}
	return b, os.WriteFile(mpath, data, 0o600)
}
