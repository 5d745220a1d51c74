package snapshot

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// stream returns dbSize pseudo-random bytes followed by their SHA-256, the
// shape of an etcd snapshot stream.
func stream(dbSize int) []byte {
	db := make([]byte, dbSize, dbSize+sha256.Size)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(db)
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

// wantDigest computes the Digest of a sound stream independently of Copy.
func wantDigest(s []byte) Digest {
	d := Digest{
		Size:   int64(len(s)),
		SHA256: sha256.Sum256(s),
		CRC32C: crc32.Checksum(s, castagnoli),
	}
	copy(d.Trailer[:], s[len(s)-sha256.Size:])
	return d
}

func flip(s []byte, i int) []byte {
	out := bytes.Clone(s)
	out[i] ^= 0x01
	return out
}

func TestCopy(t *testing.T) {
	small := stream(4096)
	large := stream(2*chunkSize + 3*4096) // spans chunks, ends mid-chunk
	exact := stream(chunkSize)            // the trailer alone in the last chunk
	errBoom := errors.New("connection reset")

	tests := []struct {
		name    string
		src     io.Reader
		want    []byte // the whole stream, when it is sound
		wantErr error
	}{
		{name: "one page", src: bytes.NewReader(small), want: small},
		{name: "several chunks", src: bytes.NewReader(large), want: large},
		{name: "trailer in its own chunk", src: bytes.NewReader(exact), want: exact},
		{name: "one byte reads", src: iotest.OneByteReader(bytes.NewReader(small)), want: small},
		{name: "data with EOF", src: iotest.DataErrReader(bytes.NewReader(large)), want: large},
		{name: "half reads", src: iotest.HalfReader(bytes.NewReader(large)), want: large},
		{name: "empty", src: bytes.NewReader(nil), wantErr: ErrNoTrailer},
		{name: "shorter than a trailer", src: bytes.NewReader(small[:31]), wantErr: ErrNoTrailer},
		{name: "database without trailer", src: bytes.NewReader(small[:4096]), wantErr: ErrNoTrailer},
		{name: "truncated", src: bytes.NewReader(large[:len(large)-512]), wantErr: ErrTrailerMismatch},
		{name: "database byte flipped", src: bytes.NewReader(flip(large, chunkSize+7)), wantErr: ErrTrailerMismatch},
		{name: "trailer byte flipped", src: bytes.NewReader(flip(small, len(small)-1)), wantErr: ErrTrailerMismatch},
		{name: "last database byte flipped", src: bytes.NewReader(flip(small, 4095)), wantErr: ErrTrailerMismatch},
		{
			name:    "read fails midway",
			src:     io.MultiReader(bytes.NewReader(large[:chunkSize+100]), iotest.ErrReader(errBoom)),
			wantErr: errBoom,
		},
		{
			name:    "stream cut short",
			src:     io.MultiReader(bytes.NewReader(large[:chunkSize+100]), iotest.ErrReader(io.ErrUnexpectedEOF)),
			wantErr: io.ErrUnexpectedEOF,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dst bytes.Buffer
			got, err := Copy(&dst, tt.src)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Copy() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Copy() error = %v", err)
			}
			if want := wantDigest(tt.want); got != want {
				t.Errorf("Copy() = %+v, want %+v", got, want)
			}
			if !bytes.Equal(dst.Bytes(), tt.want) {
				t.Errorf("dst holds %d bytes that differ from the %d-byte stream", dst.Len(), len(tt.want))
			}
		})
	}
}

// failingWriter accepts limit bytes, then fails.
type failingWriter struct {
	limit int
	err   error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.limit {
		n := w.limit
		w.limit = 0
		return n, w.err
	}
	w.limit -= len(p)
	return len(p), nil
}

// endless is a stream that never ends, like a server that keeps sending.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

func TestCopyWriteError(t *testing.T) {
	errFull := errors.New("no space left on device")
	tests := []struct {
		name  string
		src   io.Reader
		limit int
	}{
		{name: "first write", src: bytes.NewReader(stream(4096)), limit: 0},
		{name: "later write", src: bytes.NewReader(stream(3 * chunkSize)), limit: chunkSize + 1},
		// Copy must stop its reader and return although src never ends.
		{name: "endless stream", src: endless{}, limit: 2 * chunkSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Copy(&failingWriter{limit: tt.limit, err: errFull}, tt.src)
			if !errors.Is(err, errFull) {
				t.Fatalf("Copy() error = %v, want %v", err, errFull)
			}
		})
	}
}

// TestDigesterSplits feeds one stream in pieces of many sizes: the
// held-back trailer must come out the same whatever the write boundaries.
func TestDigesterSplits(t *testing.T) {
	s := stream(2 * 4096)
	want := wantDigest(s)
	splits := [][]int{
		{1},
		{31},
		{32},
		{33},
		{5, 40, 1, 1},
		{len(s) - 33, 1, 32},
		{len(s) - 1, 1},
		{len(s) - 20, 10, 10},
	}
	for _, sizes := range splits {
		h := NewDigester()
		rest := s
		for i := 0; len(rest) > 0; i++ {
			n := min(sizes[i%len(sizes)], len(rest))
			h.Write(rest[:n])
			rest = rest[n:]
		}
		got, err := h.Digest()
		if err != nil {
			t.Fatalf("splits %v: Digest() error = %v", sizes, err)
		}
		if got != want {
			t.Errorf("splits %v: Digest() = %+v, want %+v", sizes, got, want)
		}
	}
}

func TestVerifyFile(t *testing.T) {
	s := stream(3 * 4096)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		name    string
		path    string
		wantErr error
	}{
		{name: "sound", path: write("sound.db", s)},
		{name: "flipped", path: write("flipped.db", flip(s, 100)), wantErr: ErrTrailerMismatch},
		{name: "no trailer", path: write("bare.db", s[:3*4096]), wantErr: ErrNoTrailer},
		{name: "missing", path: filepath.Join(dir, "missing.db"), wantErr: fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := verifyFile(tt.path)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("verifyFile() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("verifyFile() error = %v", err)
			}
			if want := wantDigest(s); got != want {
				t.Errorf("verifyFile() = %+v, want %+v", got, want)
			}
		})
	}
}

// repeatReader yields block n times: a large stream in little memory.
type repeatReader struct {
	block []byte
	n     int
	off   int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	c := copy(p, r.block[r.off:])
	r.off += c
	if r.off == len(r.block) {
		r.off = 0
		r.n--
	}
	return c, nil
}

func BenchmarkCopy(b *testing.B) {
	const size = 256 << 20
	block := stream(chunkSize)[:chunkSize]
	h := sha256.New()
	for range size / chunkSize {
		h.Write(block)
	}
	trailer := h.Sum(nil)

	b.SetBytes(size + sha256.Size)
	for b.Loop() {
		src := io.MultiReader(&repeatReader{block: block, n: size / chunkSize}, bytes.NewReader(trailer))
		if _, err := Copy(io.Discard, src); err != nil {
			b.Fatal(err)
		}
	}
}

// verifyFile reads the snapshot file at path through Copy, as verify does.
func verifyFile(path string) (Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return Digest{}, err
	}
	defer f.Close()
	return Copy(io.Discard, f)
}
