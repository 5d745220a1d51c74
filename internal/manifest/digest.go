package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Digest computes what a File records of its content, as the content is
// written through it: size, SHA-256 and CRC32C (Castagnoli, as GCS uses).
// One made by NewChecksum keeps no SHA-256.
type Digest struct {
	n   int64
	sha hash.Hash
	crc hash.Hash32
}

// NewDigest returns an empty Digest.
func NewDigest() *Digest {
	return &Digest{sha: sha256.New(), crc: crc32.New(castagnoli)}
}

// NewChecksum returns an empty Digest of size and CRC32C only: for bytes
// whose SHA-256 is not recorded, or is computed elsewhere already.
func NewChecksum() *Digest {
	return &Digest{crc: crc32.New(castagnoli)}
}

// Write never fails, so a Digest can sit in an io.MultiWriter.
func (d *Digest) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	if d.sha != nil {
		d.sha.Write(p)
	}
	d.crc.Write(p)
	return len(p), nil
}

// Size is the number of bytes written.
func (d *Digest) Size() int64 { return d.n }

// SHA256 is the hex SHA-256 of the bytes written; "" from NewChecksum.
func (d *Digest) SHA256() string {
	if d.sha == nil {
		return ""
	}
	return hex.EncodeToString(d.sha.Sum(nil))
}

// CRC32C is the CRC32C of the bytes written.
func (d *Digest) CRC32C() uint32 { return d.crc.Sum32() }

// Check reports how the bytes written differ from what f records, or nil.
func (d *Digest) Check(f File) error { return f.Match(d.n, d.SHA256(), d.CRC32C()) }

// Match reports how content of the given size and checksums (SHA-256 in
// hex) differs from what f records, or nil. A SHA-256 that f does not
// record (the stored bytes of an encrypted object) is not compared.
func (f File) Match(size int64, sha256 string, crc32c uint32) error {
	switch {
	case size != f.Size:
		return fmt.Errorf("%s is %d bytes, %s says %d", f.Name, size, FileName, f.Size)
	case f.SHA256 != "" && sha256 != f.SHA256:
		return fmt.Errorf("%s: SHA-256 %s does not match %s (%s): the file is corrupt", f.Name, sha256, FileName, f.SHA256)
	case crc32c != f.CRC32C:
		return fmt.Errorf("%s: CRC32C %08x does not match %s (%08x): the file is corrupt", f.Name, crc32c, FileName, f.CRC32C)
	}
	return nil
}
