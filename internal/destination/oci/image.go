package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	cimanifest "go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/types"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// The image form (--oci-format image) is for registries that take only
// images: a plain scratch image whose one layer is a tar of the backup's
// directory, so that `oc image extract` or `podman create` and `podman cp`
// fetch it with stock tools. backup.json comes first in the layer, so that
// list reads only the start of it; then the archive, then the snapshot.
const (
	imageDir   = "backup"
	layerTitle = "etcd-backup.tar"
)

// tarOrder is the order of the backup's files in the layer: small first,
// so that reaching one streams little of the others.
func tarOrder(b *manifest.Backup) []manifest.File {
	return []manifest.File{*b.File(manifest.KindResources), *b.File(manifest.KindSnapshot)}
}

// writeLayer writes the layer of b: its directory, backup.json (raw), then
// each file as open yields it, checked as it is read.
func writeLayer(w io.Writer, b *manifest.Backup, raw []byte, open func(manifest.File) (io.ReadCloser, error)) error {
	tw := tar.NewWriter(w)
	mtime := b.CreatedAt.UTC().Truncate(time.Second)
	header := func(name string, size int64) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: path.Join(imageDir, name), Size: size, Mode: 0o600, ModTime: mtime}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: imageDir + "/", Mode: 0o700, ModTime: mtime}); err != nil {
		return err
	}
	if err := tw.WriteHeader(header(manifest.FileName, int64(len(raw)))); err != nil {
		return err
	}
	if _, err := tw.Write(raw); err != nil {
		return err
	}
	for _, f := range tarOrder(b) {
		if err := tw.WriteHeader(header(f.Name, f.Size)); err != nil {
			return err
		}
		r, err := open(f)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, r)
		r.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// entry returns a reader of the file name in the layer read from r, and
// io.EOF when the layer has no such file.
func entry(r io.Reader, name string) (io.Reader, error) {
	tr := tar.NewReader(r)
	want := path.Join(imageDir, name)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, err
		}
		if path.Clean(h.Name) == want && h.Typeflag == tar.TypeReg {
			return tr, nil
		}
	}
}

// commitImage sends the layer and an image config, then the manifest.
func (u *upload) commitImage(ctx context.Context, b *manifest.Backup, data []byte, res *destination.Result) error {
	open := func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			pw.CloseWithError(writeLayer(pw, b, data, func(f manifest.File) (io.ReadCloser, error) { return u.openers[f.Name]() }))
		}()
		return pr, nil
	}
	got, _, err := u.sendUnknown(ctx, layerTitle, mediaTypeFile, open)
	if err != nil {
		return err
	}
	layerDigest := got.Digest
	for name := range res.Files {
		res.Files[name] = u.d.t.blobURL(layerDigest)
	}
	created := b.CreatedAt.UTC()
	config, err := json.Marshal(imgspecv1.Image{
		Created:  &created,
		Platform: imgspecv1.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   imgspecv1.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDigest}},
	})
	if err != nil {
		return err
	}
	cfg := types.BlobInfo{Digest: digest.FromBytes(config), Size: int64(len(config)), MediaType: imgspecv1.MediaTypeImageConfig}
	if _, err := u.put(ctx, "config", cfg, bytesOpener(config), true); err != nil {
		return err
	}
	m, err := json.Marshal(imgspecv1.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   imgspecv1.MediaTypeImageManifest,
		Config:      imgspecv1.Descriptor{MediaType: cfg.MediaType, Digest: cfg.Digest, Size: cfg.Size},
		Layers:      []imgspecv1.Descriptor{layer(layerTitle, layerDigest, got.Size, mediaTypeFile)},
		Annotations: annotations(b, destination.FormatImage),
	})
	if err != nil {
		return err
	}
	res.Digest = string(digest.FromBytes(m))
	return u.pushManifest(ctx, b, m)
}

// isImage says whether m may be a backup in the image form: as upload
// pushed it, or as a copy converted on the way to a mirror (skopeo copy
// --format v2s2), which keeps the tar in the layer, compressed, and drops
// the annotations. inspect reads backup.json out of the layer to know.
func isImage(m *imgspecv1.Manifest) bool {
	if len(m.Layers) != 1 || m.ArtifactType != "" {
		return false
	}
	switch m.MediaType {
	case imgspecv1.MediaTypeImageManifest:
		return m.Annotations[AnnotationFormat] == destination.FormatImage || len(m.Annotations) == 0
	case cimanifest.DockerV2Schema2MediaType:
		return true
	}
	return false
}

// layerStream streams the image form's layer as a tar, decompressed when a
// copy compressed it.
func (d *Dest) layerStream(ctx context.Context, src types.ImageSource, desc imgspecv1.Descriptor) (*layerReader, error) {
	rc, err := d.stream(ctx, src, layerTitle, desc.Digest, desc.Size)
	if err != nil {
		return nil, err
	}
	l := &layerReader{src: exitcode.NewSource(rc)}
	if err := l.decompress(rc.Close); err != nil {
		rc.Close()
		return nil, l.blame(err)
	}
	return l, nil
}

// decompress sets l up to read the tar in the layer: as it is, or through
// gzip (what a conversion to a Docker image writes) or zstd.
func (l *layerReader) decompress(closeStream func() error) error {
	buf := bufio.NewReader(l.src)
	magic, err := buf.Peek(4)
	if err != nil && err != io.EOF {
		return err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(buf)
		if err != nil {
			return err
		}
		l.plain, l.close = z, func() error { z.Close(); return closeStream() }
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(buf, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		l.plain, l.close = z, func() error { z.Close(); return closeStream() }
	default:
		l.plain, l.close = buf, closeStream
	}
	return nil
}

// layerReader reads a layer: a failure to read it while the stream under
// it did not fail is bytes that are not a tar, or not a compressed one, a
// damaged layer.
type layerReader struct {
	src   *exitcode.Source
	plain io.Reader
	close func() error
}

func (l *layerReader) Read(p []byte) (int, error) { return l.plain.Read(p) }

func (l *layerReader) Close() error { return l.close() }

// blame returns err as it is when the stream failed or err carries its
// own code, and as a damaged layer (exit 4) otherwise.
func (l *layerReader) blame(err error) error {
	if l.src.Err() != nil || exitcode.Of(err) != exitcode.Failure {
		return err
	}
	return exitcode.With(exitcode.Verify, fmt.Errorf("the layer %s is damaged: %w", layerTitle, err))
}

// file returns a reader of the file name in the layer, whose failures are
// blamed as the layer's.
func (l *layerReader) file(name string) (io.Reader, error) {
	r, err := entry(l, name)
	if err == io.EOF {
		return nil, exitcode.With(exitcode.Verify, fmt.Errorf("the layer holds no %s", path.Join(imageDir, name)))
	}
	if err != nil {
		return nil, l.blame(err)
	}
	return readerFunc(func(p []byte) (int, error) {
		n, err := r.Read(p)
		if err != nil && err != io.EOF {
			err = l.blame(err)
		}
		return n, err
	}), nil
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// layerManifest reads backup.json from the start of the image form's layer.
func (d *Dest) layerManifest(ctx context.Context, src types.ImageSource, desc imgspecv1.Descriptor) ([]byte, error) {
	var data []byte
	err := d.retry(ctx, "read "+manifest.FileName, func() error {
		l, err := d.layerStream(ctx, src, desc)
		if err != nil {
			return err
		}
		defer l.Close()
		r, err := l.file(manifest.FileName)
		if err == nil {
			data, err = io.ReadAll(io.LimitReader(r, maxManifestBytes+1))
		}
		if exitcode.Of(err) == exitcode.Verify {
			return permanent{err}
		}
		return err
	})
	var p permanent
	if errors.As(err, &p) {
		return nil, p.error
	}
	return data, err
}

// openEntry streams file f out of the image form's layer.
func (d *Dest) openEntry(ctx context.Context, src types.ImageSource, desc imgspecv1.Descriptor, f manifest.File) (io.ReadCloser, error) {
	l, err := d.layerStream(ctx, src, desc)
	if err != nil {
		return nil, err
	}
	r, err := l.file(f.Name)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("read %s from the layer of %s: %w", f.Name, d.URL(), err)
	}
	return readCloser{Reader: r, close: l.Close}, nil
}
