package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"strings"
	"testing"
)

func TestDigest(t *testing.T) {
	data := []byte("snapshot bytes")
	sum := sha256.Sum256(data)
	good := File{Name: "f", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), CRC32C: crc32.Checksum(data, castagnoli)}
	d := NewDigest()
	d.Write(data[:4])
	d.Write(data[4:])
	if err := d.Check(good); err != nil {
		t.Fatalf("Check of the right content: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*File)
		want   string
	}{
		{"size", func(f *File) { f.Size++ }, "bytes"},
		{"sha256", func(f *File) { f.SHA256 = strings.Repeat("0", 64) }, "SHA-256"},
		{"crc32c", func(f *File) { f.CRC32C++ }, "CRC32C"},
	}
	for _, tt := range tests {
		f := good
		tt.mutate(&f)
		if err := d.Check(f); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Check = %v, want an error about %s", tt.name, err, tt.want)
		}
	}
}
