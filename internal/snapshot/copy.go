// Package snapshot carries an etcd snapshot from its stream to a file and
// checks it: the SHA-256 trailer the server appends, the bbolt structure, and
// a trial restore with etcd's own restore code.
//
// A snapshot stream is the bbolt database followed by the 32-byte SHA-256 of
// the database bytes. The file keeps the trailer, because OpenShift's
// cluster-restore.sh runs `etcdutl snapshot restore` with the hash check on.
package snapshot

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"
)

var (
	// ErrNoTrailer means the stream cannot end in a SHA-256 trailer: etcd
	// databases are whole pages, so a snapshot is 512*k+32 bytes long (the
	// test `etcdutl snapshot restore` applies).
	ErrNoTrailer = errors.New("snapshot has no SHA-256 trailer")
	// ErrTrailerMismatch means the database bytes do not hash to the trailer:
	// the snapshot was damaged after the server wrote it.
	ErrTrailerMismatch = errors.New("snapshot SHA-256 does not match its trailer")
)

// Digest describes a snapshot file as Copy read it.
type Digest struct {
	// Size is the length of the file, trailer included.
	Size int64
	// SHA256 is the digest of the whole file, trailer included.
	SHA256 [sha256.Size]byte
	// Trailer is the digest of the database bytes, as carried in the
	// trailer and checked against them.
	Trailer [sha256.Size]byte
	// CRC32C is the Castagnoli CRC of the whole file, as GCS computes it.
	CRC32C uint32
}

const (
	// chunkSize is large so that a file write and a hash update cover many of
	// the server's 32 KiB messages at once.
	chunkSize = 1 << 20
	// chunks bounds the memory of one Copy to chunks*chunkSize bytes.
	chunks = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Copy streams src to dst once and checks the trailer at its end, with a
// Digester.
//
// Reading runs in a goroutine ahead of writing and hashing, so that the
// stream keeps flowing while a chunk is hashed. Copy returns only once that
// goroutine is done with src.
//
// Errors wrap ErrNoTrailer or ErrTrailerMismatch when the stream is not a
// sound snapshot; dst has then received the whole stream all the same.
func Copy(dst io.Writer, src io.Reader) (Digest, error) {
	free := make(chan []byte, chunks)
	for range chunks {
		free <- make([]byte, chunkSize)
	}
	// filled can hold every buffer, so the reader never blocks on it.
	filled := make(chan chunk, chunks)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { readChunks(src, free, filled, done) })
	d, err := writeChunks(dst, free, filled)
	close(done)
	wg.Wait()
	return d, err
}

// chunk is buf[:n] read from the stream, then err (io.EOF at the end).
type chunk struct {
	buf []byte
	n   int
	err error
}

func readChunks(src io.Reader, free <-chan []byte, filled chan<- chunk, done <-chan struct{}) {
	for {
		var buf []byte
		select {
		case <-done:
			return
		case buf = <-free:
		}
		n, err := fill(src, buf)
		filled <- chunk{buf: buf, n: n, err: err}
		if err != nil {
			return
		}
	}
}

// fill reads into buf until it is full or src returns an error. Unlike
// io.ReadFull it keeps io.EOF and a stream's own io.ErrUnexpectedEOF apart.
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func writeChunks(dst io.Writer, free chan<- []byte, filled <-chan chunk) (Digest, error) {
	h := NewDigester()
	for {
		c := <-filled
		p := c.buf[:c.n]
		if len(p) > 0 {
			if _, err := dst.Write(p); err != nil {
				return Digest{}, fmt.Errorf("write snapshot: %w", err)
			}
			h.Write(p)
		}
		free <- c.buf
		switch {
		case c.err == io.EOF:
			return h.Digest()
		case c.err != nil:
			return Digest{}, fmt.Errorf("read snapshot stream after %d bytes: %w", h.size, c.err)
		}
	}
}

// Digester computes the Digest of a snapshot written through it, in one
// SHA-256 pass: its last sha256.Size bytes are held back until the end is
// known, so that the hash then holds the database bytes only, to compare
// with the trailer, and the trailer is fed in for the whole-file digest.
type Digester struct {
	sha   hash.Hash
	crc   uint32
	size  int64
	tail  [sha256.Size]byte
	tailN int
}

// NewDigester returns an empty Digester.
func NewDigester() *Digester { return &Digester{sha: sha256.New()} }

// Write never fails, so that a Digester can sit beside a file's reader.
func (t *Digester) Write(p []byte) (int, error) {
	t.size += int64(len(p))
	t.crc = crc32.Update(t.crc, castagnoli, p)
	if len(p) >= len(t.tail) {
		t.sha.Write(t.tail[:t.tailN])
		t.sha.Write(p[:len(p)-len(t.tail)])
		t.tailN = copy(t.tail[:], p[len(p)-len(t.tail):])
		return len(p), nil
	}
	// Release what no longer fits among the last 32 bytes.
	if over := t.tailN + len(p) - len(t.tail); over > 0 {
		t.sha.Write(t.tail[:over])
		t.tailN = copy(t.tail[:], t.tail[over:t.tailN])
	}
	t.tailN += copy(t.tail[t.tailN:], p)
	return len(p), nil
}

// Digest describes what was written, once it was all written; it is called
// once. Errors wrap ErrNoTrailer or ErrTrailerMismatch when it is not a
// sound snapshot.
func (t *Digester) Digest() (Digest, error) {
	if t.size%512 != sha256.Size {
		return Digest{}, fmt.Errorf("%w: %d bytes is not 512*k+32", ErrNoTrailer, t.size)
	}
	var db [sha256.Size]byte
	t.sha.Sum(db[:0])
	if !bytes.Equal(db[:], t.tail[:]) {
		return Digest{}, fmt.Errorf("%w: trailer %x, database bytes hash to %x", ErrTrailerMismatch, t.tail, db)
	}
	d := Digest{Size: t.size, Trailer: t.tail, CRC32C: t.crc}
	t.sha.Write(t.tail[:])
	t.sha.Sum(d.SHA256[:0])
	return d, nil
}
