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
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/docker/distribution/registry/api/errcode"
	v2 "github.com/docker/distribution/registry/api/v2"
	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/types"
	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// transport is what differs between a registry and a layout directory.
type transport interface {
	kind() string
	url(tag string) string
	imageURL(tag string) string
	// blobURL addresses one blob: REPO@DIGEST, as oras blob fetch takes
	// it, or its file in the layout.
	blobURL(d digest.Digest) string
	ref(tag string) (types.ImageReference, error)
	tags(ctx context.Context, sys *types.SystemContext) ([]string, error)
	// delete removes the manifest with digest d that tag names.
	delete(ctx context.Context, sys *types.SystemContext, tag string, d digest.Digest) error
	// prepare readies the destination for a first write.
	prepare() error
	// seal makes what a write left readable by its owner only, and
	// durable where the write itself is not.
	seal() error
	// stored checks, where that is cheap, that the blob with digest d is
	// there whole (size bytes); nil where it cannot tell.
	stored(d digest.Digest, size int64) error
	// lock keeps other runs of this tool from committing to the
	// destination until it is closed, where the destination does not see
	// to that itself; it waits up to wait for another run's commit.
	lock(ctx context.Context, wait time.Duration) (io.Closer, error)
	// sharedIndex says that every commit rewrites one index of all the
	// destination's backups (a layout's index.json): a commit must read
	// it afresh, under lock.
	sharedIndex() bool
}

// Registry is the docker:// kind: a repository in a registry.
func Registry() destination.Factory {
	return destination.Factory{
		Scheme: "docker",
		Form:   "docker://HOST[:PORT]/REPO",
		Open: func(ctx context.Context, rest string, opts destination.Options) (destination.Dest, error) {
			t, err := newRegistry(rest)
			if err != nil {
				return nil, exitcode.With(exitcode.Usage, err)
			}
			return open(t, opts)
		},
		Split: func(rest string) (string, string, error) {
			repo, tag, ok := splitTag(rest)
			if !ok {
				return "", "", fmt.Errorf("%s names no backup: use docker://HOST[:PORT]/REPO:TAG", shown("docker:"+rest))
			}
			return repo, tag, nil
		},
	}
}

// Layout is the oci: kind: an OCI image layout directory.
func Layout() destination.Factory {
	return destination.Factory{
		Scheme: "oci",
		Form:   "oci:PATH",
		Open: func(ctx context.Context, rest string, opts destination.Options) (destination.Dest, error) {
			if rest == "" {
				return nil, exitcode.With(exitcode.Usage, errors.New("oci: names no directory: use oci:PATH"))
			}
			dir, err := filepath.Abs(rest)
			if err != nil {
				return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s: %w", shown("oci:"+rest), err))
			}
			if err := layoutDir(dir).check(ctx, opts.StallTimeout); err != nil {
				return nil, err
			}
			return open(layoutDir(dir), opts)
		},
		Split: func(rest string) (string, string, error) {
			dir, tag, ok := splitTag(rest)
			if !ok {
				return "", "", fmt.Errorf("%s names no backup: use oci:PATH:TAG", shown("oci:"+rest))
			}
			return dir, tag, nil
		},
	}
}

type registry struct {
	repo reference.Named
}

func newRegistry(rest string) (registry, error) {
	s, ok := strings.CutPrefix(rest, "//")
	host, repo, _ := strings.Cut(s, "/")
	if !ok || host == "" {
		return registry{}, fmt.Errorf("%s: use docker://HOST[:PORT]/REPO", shown("docker:"+rest))
	}
	if repo == "" {
		return registry{}, fmt.Errorf("%s names no repository: use docker://HOST[:PORT]/REPO", shown("docker:"+rest))
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return registry{}, fmt.Errorf("%s: %w", shown("docker:"+rest), err)
	}
	if !reference.IsNameOnly(named) {
		return registry{}, fmt.Errorf("%s names a tag or digest: use docker://HOST[:PORT]/REPO", shown("docker:"+rest))
	}
	if reference.Domain(named) != host {
		return registry{}, fmt.Errorf("%s names no registry host: use docker://HOST[:PORT]/REPO", shown("docker:"+rest))
	}
	return registry{repo: named}, nil
}

func (r registry) kind() string               { return "registry" }
func (r registry) url(tag string) string      { return "docker://" + r.imageURL(tag) }
func (r registry) imageURL(tag string) string { return r.repo.Name() + ":" + tag }
func (r registry) prepare() error             { return nil }
func (r registry) seal() error                { return nil }

// lock is not needed: a registry takes each manifest on its own.
func (r registry) lock(context.Context, time.Duration) (io.Closer, error) { return unlocked{}, nil }
func (r registry) sharedIndex() bool                                      { return false }

type unlocked struct{}

func (unlocked) Close() error { return nil }

// stored takes a registry's blobs on trust: it refuses a manifest whose
// blobs it lacks, and its garbage collection keeps what manifests name.
func (r registry) stored(digest.Digest, int64) error { return nil }
func (r registry) blobURL(d digest.Digest) string {
	return r.repo.Name() + "@" + d.String()
}

func (r registry) ref(tag string) (types.ImageReference, error) {
	tagged, err := reference.WithTag(r.repo, tag)
	if err != nil {
		return nil, err
	}
	return docker.NewReference(tagged)
}

func (r registry) tags(ctx context.Context, sys *types.SystemContext) ([]string, error) {
	ref, err := r.ref("latest")
	if err != nil {
		return nil, err
	}
	tags, err := docker.GetRepositoryTags(ctx, sys, ref)
	if isCode(err, v2.ErrorCodeNameUnknown) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", r.repo.Name(), settingsError(err))
	}
	return tags, nil
}

func (r registry) delete(ctx context.Context, sys *types.SystemContext, tag string, d digest.Digest) error {
	canonical, err := reference.WithDigest(r.repo, d)
	if err != nil {
		return err
	}
	ref, err := docker.NewReference(canonical)
	if err != nil {
		return err
	}
	err = ref.DeleteImage(ctx, sys)
	if isCode(err, errcode.ErrorCodeUnsupported) {
		return fmt.Errorf("registry %s refuses to delete %s: enable deletes in the registry (distribution: REGISTRY_STORAGE_DELETE_ENABLED=true, or storage.delete.enabled in its config)", reference.Domain(r.repo), tag)
	}
	if isCode(err, errcode.ErrorCodeDenied) {
		// Rights to read and push often stop short of deletes (a robot
		// account's).
		return exitcode.With(exitcode.Usage, fmt.Errorf("delete %s: %w; the registry lets these credentials read but not delete: give credentials that may delete from the repository", r.url(tag), err))
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", r.url(tag), settingsError(err))
	}
	return nil
}

// shown is a URL as an error message shows it: quoted when it holds a
// character that would break the message's one line.
func shown(url string) string {
	if strings.ContainsFunc(url, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return strconv.Quote(url)
	}
	return url
}

func isCode(err error, code errcode.ErrorCode) bool {
	var ec errcode.ErrorCoder
	return errors.As(err, &ec) && ec.ErrorCode() == code
}

type layoutDir string

func (l layoutDir) kind() string               { return "OCI layout" }
func (l layoutDir) url(tag string) string      { return "oci:" + string(l) + ":" + tag }
func (l layoutDir) imageURL(tag string) string { return "" }

// check refuses a layout whose index.json is not an OCI index: a
// directory that is not a layout, or an index damaged on its media.
// containers/image reports it without naming the file, and every read of
// it fails the same way, so it is told once, before any. Another run's
// commit rewrites the index in place: an index that does not parse is
// read again once that commit is done, waiting up to wait for it.
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
		err = fmt.Errorf("%w: oci:%s is not an OCI layout, or its index was damaged", err, string(l))
	}
	if err != nil {
		return exitcode.With(exitcode.Usage, err)
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

// prepare creates the layout's directories for the owner only, before
// containers/image, which makes them 0755 when they do not exist.
func (l layoutDir) prepare() error {
	return os.MkdirAll(filepath.Join(string(l), "blobs", digest.SHA256.String()), 0o700)
}

// seal gives every file of the layout mode 0600: containers/image writes
// blobs and index.json 0644, and a backup holds every Secret of a cluster.
// Then it flushes the layout's file system: containers/image writes the
// manifest and index.json without a sync, and a layout is carried away
// on removable media, which may be pulled as soon as the upload says it
// is done.
func (l layoutDir) seal() error {
	err := filepath.WalkDir(string(l), func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		return os.Chmod(path, 0o600)
	})
	if err != nil {
		return err
	}
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
			return nil, fmt.Errorf("oci:%s is held by another run of etcd-backup (an upload or a prune) for more than %s (%w)", string(l), wait, err)
		}
		select {
		case <-ctx.Done():
			dir.Close()
			return nil, context.Cause(ctx)
		case <-time.After(lockPoll):
		}
	}
}

// lockPoll is how often lock looks again at a layout another run holds.
const lockPoll = 20 * time.Millisecond

func (l layoutDir) sharedIndex() bool { return true }

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
		return nil, fmt.Errorf("read OCI layout %s: %w", string(l), err)
	}
	var tags []string
	for _, e := range list {
		if name := e.ManifestDescriptor.Annotations["org.opencontainers.image.ref.name"]; name != "" {
			tags = append(tags, name)
		}
	}
	return tags, nil
}

// delete drops the index entry of tag and every blob no other entry uses.
func (l layoutDir) delete(ctx context.Context, sys *types.SystemContext, tag string, _ digest.Digest) error {
	ref, err := l.ref(tag)
	if err != nil {
		return err
	}
	if err := ref.DeleteImage(ctx, sys); err != nil {
		return fmt.Errorf("delete %s: %w", l.url(tag), err)
	}
	return nil
}
