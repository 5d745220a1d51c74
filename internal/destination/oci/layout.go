package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/types"
	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/smallfile"
)

// Layout is the oci: kind: an OCI image layout directory.
func Layout() destination.Factory {
	return destination.Factory{
		Scheme: "oci",
		Form:   "oci:PATH",
		Open: func(ctx context.Context, rest string, opts destination.Options) (destination.Dest, error) {
			if rest == "" {
				return nil, exitcode.With(exitcode.Usage, errors.New("oci: names no directory: use oci:PATH"))
			}
			// skopeo and containers/image end a layout's path at its first
			// colon: a layout made at such a path would be out of their
			// reach, and oci:PATH:TAG given for a layout made one.
			if strings.Contains(rest, ":") {
				return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s: a layout's path cannot hold a colon, which skopeo and containers/image read as the start of a tag: give the layout's directory, oci:PATH (upload names each backup's tag)", shown("oci:"+rest)))
			}
			dir, err := filepath.Abs(rest)
			if err != nil {
				return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s: %w", shown("oci:"+rest), err))
			}
			if err := layoutDir(dir).placed(); err != nil {
				return nil, exitcode.With(exitcode.Usage, err)
			}
			if err := layoutDir(dir).check(ctx, opts.StallTimeout); err != nil {
				return nil, err
			}
			return open(layoutDir(dir), opts)
		},
		Guess: func(s string) string {
			if dir, _, ok := blobFile(s); ok && isLayout(dir) {
				return "oci:" + s
			}
			return ""
		},
		Split: func(rest string) (string, string, error) {
			if dir, pin, ok := blobFile(rest); ok {
				return dir, "@" + pin.String(), nil
			}
			return splitFor("oci", "oci:PATH:TAG or oci:PATH@DIGEST")(rest)
		},
	}
}

// blobFile reads path as a blob's file in a layout, PATH/blobs/ALG/HEX, as
// upload's snapshot-uri, resources-uri and manifest-uri name the files of a
// backup in a layout, and returns the layout and the blob's digest: Open
// then names the backup that holds it. Given without oci:, a blob's file
// in a layout is guessed to mean that.
func blobFile(path string) (string, digest.Digest, bool) {
	encoded, rest := filepath.Base(path), filepath.Dir(path)
	alg, rest := filepath.Base(rest), filepath.Dir(rest)
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), encoded)
	if filepath.Base(rest) != imgspecv1.ImageBlobsDir || d.Validate() != nil {
		return "", "", false
	}
	return filepath.Dir(rest), d, true
}

type layoutDir string

func (l layoutDir) kind() string               { return "OCI layout" }
func (l layoutDir) url(tag string) string      { return "oci:" + string(l) + ":" + tag }
func (l layoutDir) imageURL(tag string) string { return "" }

// check refuses a layout whose index.json is not an OCI index: a
// directory that is not a layout, or an index damaged on its media.
// containers/image reports it without naming the file, and every read of
// it fails the same way, so it is told once, before any. Earlier versions
// of this tool rewrote the index in place: an index that does not parse
// is read again once a commit in progress is done, waiting up to wait for
// it.
func (l layoutDir) check(ctx context.Context, wait time.Duration) error {
	err := l.readIndex()
	if errors.Is(err, errNotIndex) {
		lock, lerr := l.lock(ctx, wait)
		if lerr != nil {
			return lerr
		}
		defer lock.Close()
		err = l.readIndex()
	}
	if errors.Is(err, errNotIndex) {
		err = fmt.Errorf("%w: oci:%s is not an OCI layout, or its index was damaged; its backups are then still in its blobs (README: \"A layout whose index.json is lost\")", err, string(l))
	}
	if err != nil {
		return exitcode.With(exitcode.Usage, err)
	}
	return nil
}

// placed checks that the directory the layout is in exists. An upload
// makes the layout's own directory, never the ones above it: a path whose
// parent is missing is mistyped, or names media that is not mounted.
func (l layoutDir) placed() error {
	parent := filepath.Dir(string(l))
	_, err := os.Stat(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("oci:%s: directory %s does not exist: give the path of mounted media, or create it", string(l), parent)
	}
	if err != nil {
		return fmt.Errorf("oci:%s: %w", string(l), err)
	}
	return nil
}

// nothingStored is what a destination that holds no backup, and can say no
// more, holds.
const nothingStored = "nothing is stored there"

// nearby says what the directory holds where it holds no backup: carried
// media that is not mounted leaves an empty directory, or none, a path
// one level too high holds the layout below it, and one too deep is inside
// it.
func (l layoutDir) nearby(context.Context, *types.SystemContext) string {
	if outer := l.within(); outer != "" {
		return "it is inside the layout oci:" + outer
	}
	entries, err := os.ReadDir(string(l))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "the directory does not exist: is the media mounted?"
	case err != nil:
		return nothingStored
	case len(entries) == 0:
		return "the directory is empty: is the media mounted?"
	}
	if below := l.below(); len(below) > 0 {
		return "it is not a layout; the layouts below it are " + strings.Join(below, ", ")
	}
	return nothingStored
}

// below names the layouts in the directory's subdirectories: each holds
// the oci-layout file that every layout writer leaves.
func (l layoutDir) below() []string {
	entries, _ := os.ReadDir(string(l))
	var below []string
	for _, e := range entries {
		dir := filepath.Join(string(l), e.Name())
		if e.IsDir() && isLayout(dir) {
			below = append(below, "oci:"+dir)
		}
	}
	return below
}

// within names the layout the directory is inside of, if any.
func (l layoutDir) within() string {
	for dir := filepath.Dir(string(l)); ; dir = filepath.Dir(dir) {
		if isLayout(dir) {
			return dir
		}
		if dir == filepath.Dir(dir) {
			return ""
		}
	}
}

func isLayout(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, imgspecv1.ImageLayoutFile))
	return err == nil && fi.Mode().IsRegular()
}

// fresh refuses to begin a new layout beside the backups of another: one
// level above a layout, a mistyped path would split a site's backups
// across two layouts, and list, prune and download --latest would each
// see only one of them; inside a layout, its blobs would hold another
// layout's files.
func (l layoutDir) fresh() error {
	if _, err := os.Stat(filepath.Join(string(l), imgspecv1.ImageIndexFile)); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if outer := l.within(); outer != "" {
		return exitcode.With(exitcode.Usage, fmt.Errorf("oci:%s is inside the layout oci:%s: give that layout, or a directory outside it for a new one", string(l), outer))
	}
	if below := l.below(); len(below) > 0 {
		return exitcode.With(exitcode.Usage, fmt.Errorf("oci:%s is not a layout, and the layouts below it are %s: give one of them, or a directory of its own for a new layout", string(l), strings.Join(below, ", ")))
	}
	return nil
}

var errNotIndex = errors.New("is not an OCI index")

// readIndex reads the layout's index.json; a layout without one is new.
func (l layoutDir) readIndex() error {
	index := filepath.Join(string(l), "index.json")
	data, err := os.ReadFile(index)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("oci:%s is not a directory (it, or one above it, is a file): give a directory for the layout", string(l))
	case err != nil:
		return err
	}
	var parsed struct {
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(data, &parsed); err != nil {
		return fmt.Errorf("%s %w (%w)", index, errNotIndex, err)
	}
	return nil
}

// prepare refuses a new layout where fresh does, creates the layout's
// directories for the owner only, before containers/image, which makes
// them 0755 when they do not exist, and checks that its file system can
// hold the largest blob, name.
func (l layoutDir) prepare(name string, size int64) error {
	if err := l.fresh(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(string(l), "blobs", digest.SHA256.String()), 0o700); err != nil {
		return err
	}
	return atomicfile.Fits(string(l), name, size)
}

// seal gives every file of the layout mode 0600: containers/image writes
// blobs 0644, and a backup holds every Secret of a cluster. Only the
// layout's own files: its directory may hold others (the root of a USB
// stick), which are not this tool's to change. Then it flushes the
// layout's file system: a layout is carried away on removable media, which
// may be pulled as soon as the upload says it is done.
func (l layoutDir) seal() error {
	err := filepath.WalkDir(filepath.Join(string(l), imgspecv1.ImageBlobsDir), func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		return os.Chmod(path, 0o600)
	})
	if err != nil {
		return err
	}
	for _, name := range []string{imgspecv1.ImageLayoutFile, imgspecv1.ImageIndexFile} {
		if err := os.Chmod(filepath.Join(string(l), name), 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return l.sync()
}

// sync flushes the layout's file system: containers/image writes a
// manifest without a sync.
func (l layoutDir) sync() error {
	dir, err := os.Open(string(l))
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := unix.Syncfs(int(dir.Fd())); err != nil {
		return fmt.Errorf("sync the file system of %s: %w", string(l), err)
	}
	return nil
}

// lock takes the layout's directory for this run's commit: containers/
// image reads index.json when a write begins and writes it whole at its
// end, so of two commits at once, the later would drop the other's backup
// from the index after that upload had reported it stored. Another run's
// commit takes milliseconds: lock waits for it, up to wait.
func (l layoutDir) lock(ctx context.Context, wait time.Duration) (io.Closer, error) {
	dir, err := os.Open(string(l))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(dir.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			dir.Close()
			return nil, l.lockError(err, wait)
		}
		select {
		case <-ctx.Done():
			dir.Close()
			return nil, context.Cause(ctx)
		case <-time.After(lockPoll):
		}
	}
}

// lockError tells a layout that another run held for longer than wait
// from one whose file system takes no locks (ENOLCK: NFS without its lock
// service; ENOTSUP, EINVAL: some network and FUSE file systems).
func (l layoutDir) lockError(err error, wait time.Duration) error {
	if errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("oci:%s is held by another run of etcd-backup (an upload or a prune) for more than %s (%w)", string(l), wait, err)
	}
	return exitcode.With(exitcode.Usage, fmt.Errorf("lock oci:%s: %w: the file system there takes no locks, which keep two runs from dropping each other's backup from the layout's index; use a local file system, or for NFS run its lock service or mount with local_lock=flock", string(l), err))
}

// lockPoll is how often lock looks again at a layout another run holds.
const lockPoll = 20 * time.Millisecond

// stored checks the blob's file: on removable media it can be removed or
// cut short by hand, which no index records.
func (l layoutDir) stored(d digest.Digest, size int64) error {
	fi, err := os.Stat(l.blobURL(d))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("its blob %s is missing", d)
	case err != nil:
		return err
	case fi.Size() != size:
		return fmt.Errorf("its blob %s is %d bytes, the manifest says %d", d, fi.Size(), size)
	}
	return nil
}

func (l layoutDir) blobURL(d digest.Digest) string {
	return filepath.Join(string(l), "blobs", d.Algorithm().String(), d.Encoded())
}

func (l layoutDir) ref(tag string) (types.ImageReference, error) {
	return layout.NewReference(string(l), tag)
}

func (l layoutDir) tags(ctx context.Context, sys *types.SystemContext) ([]string, error) {
	list, err := layout.List(string(l))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		// A file that fails to read now fails on a retry too.
		return nil, permanent{fmt.Errorf("read OCI layout %s: %w", string(l), err)}
	}
	var tags []string
	for _, e := range list {
		if name := e.ManifestDescriptor.Annotations["org.opencontainers.image.ref.name"]; name != "" {
			tags = append(tags, name)
		}
	}
	return tags, nil
}

// stageDir is where, inside a layout, a commit or a delete writes the
// layout's next index.json.
const stageDir = ".etcd-backup-index"

// staged runs fn on a reference to tag in a stage: a directory inside the
// layout whose index.json is a copy of the layout's and whose blobs are
// the layout's. Once fn is done, the stage's index.json takes the place of
// the layout's with one rename. containers/image rewrites index.json in
// place, and a step killed, media pulled or power lost in that moment
// would leave an index that names none of the layout's backups. The
// caller holds the lock.
func (l layoutDir) staged(sys *types.SystemContext, tag string, fn func(types.ImageReference, *types.SystemContext) error) error {
	stage := filepath.Join(string(l), stageDir)
	if err := l.sweep(stage); err != nil {
		return err
	}
	if err := os.Mkdir(stage, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	index := filepath.Join(string(l), imgspecv1.ImageIndexFile)
	data, err := os.ReadFile(index)
	switch {
	case err == nil:
		if err := os.WriteFile(filepath.Join(stage, imgspecv1.ImageIndexFile), data, 0o600); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	ref, err := layout.NewReference(stage, tag)
	if err != nil {
		return err
	}
	shared := *sys
	shared.OCISharedBlobDirPath = filepath.Join(string(l), imgspecv1.ImageBlobsDir)
	if err := fn(ref, &shared); err != nil {
		return err
	}
	next, err := os.ReadFile(filepath.Join(stage, imgspecv1.ImageIndexFile))
	if err != nil {
		return err
	}
	// What the next index names is durable before the index is.
	if err := l.sync(); err != nil {
		return err
	}
	if err := l.markLayout(); err != nil {
		return err
	}
	return atomicfile.Replace(index, next, 0o600)
}

// leftoverAge is how old a blob that containers/image was still writing
// must be before it counts as left by a run that was killed: another
// run's blob in progress is written to all the time.
const leftoverAge = 24 * time.Hour

// sweep removes what runs cut short left in the layout: the stage and the
// next index, only ever written under the lock, and, once a day old, the
// partial blobs containers/image writes beside index.json, which hold as
// much of a snapshot as was sent and which nothing else removes.
func (l layoutDir) sweep(stage string) error {
	if err := os.RemoveAll(stage); err != nil {
		return err
	}
	parts, _ := filepath.Glob(filepath.Join(string(l), "."+imgspecv1.ImageIndexFile+".*"+atomicfile.PartSuffix))
	for _, p := range parts {
		os.Remove(p)
	}
	blobs, _ := filepath.Glob(filepath.Join(string(l), "oci-put-blob*"))
	for _, b := range blobs {
		if fi, err := os.Lstat(b); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > leftoverAge {
			os.Remove(b)
		}
	}
	return nil
}

// markLayout writes the layout's oci-layout file where there is none.
func (l layoutDir) markLayout() error {
	path := filepath.Join(string(l), imgspecv1.ImageLayoutFile)
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	data, err := json.Marshal(imgspecv1.ImageLayout{Version: imgspecv1.ImageLayoutVersion})
	if err != nil {
		return err
	}
	return atomicfile.Replace(path, data, 0o600)
}

// commit writes the manifest m and names it tag in a staged index, which
// then replaces the layout's: read afresh under the lock, it holds what
// other runs committed since the upload began.
func (l layoutDir) commit(ctx context.Context, sys *types.SystemContext, _ types.ImageDestination, tag string, m []byte) error {
	return l.staged(sys, tag, func(ref types.ImageReference, sys *types.SystemContext) error {
		dst, err := ref.NewImageDestination(ctx, sys)
		if err != nil {
			return err
		}
		defer dst.Close()
		if err := dst.PutManifest(ctx, m, nil); err != nil {
			return fmt.Errorf("push manifest %s: %w", l.url(tag), err)
		}
		return dst.Commit(ctx, nil)
	})
}

// delete drops the index entry of tag, then every blob of its manifest d
// that no other entry uses: a delete cut short leaves at most blobs that
// nothing names, never an entry whose blobs are gone.
func (l layoutDir) delete(ctx context.Context, sys *types.SystemContext, tag string, d digest.Digest) (err error) {
	defer func() {
		if err != nil {
			// Not retried: an attempt cut short leaves the index or the
			// blobs changed, and the next would start from neither.
			err = permanent{fmt.Errorf("delete %s: %w", l.url(tag), err)}
		}
	}()
	blobs, err := l.unshared(tag, d)
	if err != nil {
		return err
	}
	// containers/image removes the blobs of the layout it is given and
	// leaves a shared blob directory alone: in the stage, it only edits
	// the index.
	edit := func(ref types.ImageReference, sys *types.SystemContext) error {
		return ref.DeleteImage(ctx, sys)
	}
	err = l.staged(sys, tag, edit)
	if atomicfile.NoRoom(err) {
		// A full medium has no room for the next index until the blobs
		// are gone, and a prune is how it gets room: here the blobs go
		// first, all but the manifest, which the edit reads, and a
		// delete cut short leaves an entry listed corrupt.
		layers := slices.DeleteFunc(slices.Clone(blobs), func(b digest.Digest) bool { return b == d })
		if err := l.remove(layers); err != nil {
			return err
		}
		err = l.staged(sys, tag, edit)
	}
	if err != nil {
		return err
	}
	return l.remove(blobs)
}

// unshared returns the blobs of manifest d, which tag names, that no other
// entry of the layout's index uses.
func (l layoutDir) unshared(tag string, d digest.Digest) ([]digest.Digest, error) {
	mine := map[digest.Digest]bool{}
	if err := l.uses(mine, d); err != nil {
		return nil, err
	}
	list, err := layout.List(string(l))
	if err != nil {
		return nil, err
	}
	others := map[digest.Digest]bool{}
	for _, e := range list {
		if e.ManifestDescriptor.Annotations[imgspecv1.AnnotationRefName] == tag {
			continue
		}
		if err := l.uses(others, e.ManifestDescriptor.Digest); err != nil {
			return nil, err
		}
	}
	var out []digest.Digest
	for b := range mine {
		if !others[b] {
			out = append(out, b)
		}
	}
	return out, nil
}

// remove removes the blobs; one already gone is no error.
func (l layoutDir) remove(blobs []digest.Digest) error {
	for _, b := range blobs {
		if err := os.Remove(l.blobURL(b)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// maxManifest bounds what is read of a blob that an index names as a
// manifest or an index, as containers/image bounds a manifest.
const maxManifest = 4 << 20

// uses adds to blobs the blob d and, when it is a manifest or an index,
// every blob it names.
func (l layoutDir) uses(blobs map[digest.Digest]bool, d digest.Digest) error {
	if blobs[d] {
		return nil
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w", d, err)
	}
	blobs[d] = true
	data, err := smallfile.Read(l.blobURL(d), maxManifest)
	var dir smallfile.DirError
	switch {
	case errors.Is(err, smallfile.ErrTooLarge):
		return fmt.Errorf("blob %s, which the index names as a manifest, is over %d MiB: no manifest is; %s is damaged, or names another tool's content wrongly", d, maxManifest>>20, filepath.Join(string(l), imgspecv1.ImageIndexFile))
	case errors.As(err, &dir):
		// Not a Secret's mount path: no file in it is the blob.
		return fmt.Errorf("blob %s is a directory: the layout is damaged", l.blobURL(d))
	case err != nil:
		return err
	}
	var m struct {
		Config    *imgspecv1.Descriptor  `json:"config"`
		Layers    []imgspecv1.Descriptor `json:"layers"`
		Manifests []imgspecv1.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	named := append(m.Layers, m.Manifests...)
	if m.Config != nil {
		named = append(named, *m.Config)
	}
	for _, desc := range named {
		if desc.MediaType == imgspecv1.MediaTypeImageManifest || desc.MediaType == imgspecv1.MediaTypeImageIndex {
			if err := l.uses(blobs, desc.Digest); err != nil {
				return err
			}
			continue
		}
		if err := desc.Digest.Validate(); err != nil {
			return fmt.Errorf("blob %s names digest %q: %w", d, desc.Digest, err)
		}
		blobs[desc.Digest] = true
	}
	return nil
}
