package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/docker/distribution/registry/api/errcode"
	v2 "github.com/docker/distribution/registry/api/v2"
	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/types"

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
	// prepare readies the destination for a first write whose largest
	// blob is name, of size bytes.
	prepare(name string, size int64) error
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
	// commit pushes the manifest m under tag, through dst, the upload's
	// destination, where that is how the destination takes it. The caller
	// holds the lock.
	commit(ctx context.Context, sys *types.SystemContext, dst types.ImageDestination, tag string, m []byte) error
	// nearby says what the destination holds where it holds no backup.
	nearby(ctx context.Context, sys *types.SystemContext) string
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
		Guess: guessRegistry,
		Split: splitFor("docker", "docker://HOST[:PORT]/REPO:TAG or docker://HOST[:PORT]/REPO@DIGEST"),
	}
}

// guessRegistry returns docker://s when s reads as an image reference
// with its registry's host: HOST[:PORT]/REPO..., the host a name with a
// dot or a port, or localhost. A relative path (./x, ../x) never does.
func guessRegistry(s string) string {
	host, repo, ok := strings.Cut(s, "/")
	if !ok || repo == "" || strings.HasPrefix(host, ".") || !strings.ContainsAny(host, ".:") && host != "localhost" {
		return ""
	}
	return "docker://" + s
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
	if host == "http:" || host == "https:" {
		return registry{}, fmt.Errorf("%s: a registry is named without a scheme: use docker://HOST[:PORT]/REPO (TLS unless --tls-verify=false)", shown("docker:"+rest))
	}
	if strings.HasSuffix(repo, "/") {
		return registry{}, fmt.Errorf("%s ends with a slash: use docker://HOST[:PORT]/REPO, without one", shown("docker:"+rest))
	}
	if strings.HasPrefix(host, "[") {
		// containers/image's references have no form for one.
		return registry{}, fmt.Errorf("%s: an IPv6 address cannot name a registry; give its host name", shown("docker:"+rest))
	}
	named, err := reference.ParseNormalizedNamed(s)
	if lower := host + "/" + strings.ToLower(repo); err != nil && lower != s {
		// Repository names are lowercase, as registries store them.
		if _, lerr := reference.ParseNormalizedNamed(lower); lerr == nil {
			return registry{}, fmt.Errorf("%s: %w: give docker://%s", shown("docker:"+rest), err, lower)
		}
	}
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

// inCluster reports whether r is in OpenShift's integrated image registry,
// by its service or its default route.
func (r registry) inCluster() bool {
	host, _, _ := strings.Cut(reference.Domain(r.repo), ":")
	return host == "image-registry.openshift-image-registry.svc" ||
		host == "image-registry.openshift-image-registry.svc.cluster.local" ||
		strings.HasPrefix(host, "default-route-openshift-image-registry.")
}

// uncovered reports whether none of an auth file's keys applies to r.
// docker.io, whose keys take several forms, never is.
func (r registry) uncovered(keys []string) bool {
	host := reference.Domain(r.repo)
	return host != "docker.io" && !covers(keys, host)
}

// host is the registry's host as containers/image's requests name it.
func (r registry) host() string {
	if h := reference.Domain(r.repo); h != "docker.io" {
		return h
	}
	return "registry-1.docker.io"
}

// endpoint is where r's requests go under sys.
func (r registry) endpoint(sys *types.SystemContext) endpoint {
	return endpoint{host: r.host(), plain: sys.DockerInsecureSkipTLSVerify == types.OptionalBoolTrue}
}

func (r registry) kind() string                { return "registry" }
func (r registry) url(tag string) string       { return "docker://" + r.imageURL(tag) }
func (r registry) imageURL(tag string) string  { return r.repo.Name() + ":" + tag }
func (r registry) prepare(string, int64) error { return nil }
func (r registry) seal() error                 { return nil }

// lock is not needed: a registry takes each manifest on its own.
func (r registry) lock(context.Context, time.Duration) (io.Closer, error) { return unlocked{}, nil }

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
		return nil, fmt.Errorf("list tags of %s: %w", r.repo.Name(), err)
	}
	return tags, nil
}

// nearby tells a repository the registry does not know, a mistyped name
// most often, from one that holds only other images.
func (r registry) nearby(ctx context.Context, sys *types.SystemContext) string {
	ref, err := r.ref("latest")
	if err != nil {
		return nothingStored
	}
	tags, err := docker.GetRepositoryTags(ctx, sys, ref)
	switch {
	case isCode(err, v2.ErrorCodeNameUnknown):
		return "the registry has no repository " + reference.Path(r.repo) + ": is its name mistyped?"
	case err == nil && slices.ContainsFunc(tags, isOurTag):
		return "tags that name backups of this tool are there, and none could be read as one (see the warnings above)"
	case err == nil && len(tags) > 0:
		return fmt.Sprintf("none of the repository's tags (%d) names a backup of this tool", len(tags))
	}
	return nothingStored
}

func (r registry) commit(ctx context.Context, _ *types.SystemContext, dst types.ImageDestination, tag string, m []byte) error {
	if err := dst.PutManifest(ctx, m, nil); err != nil {
		return fmt.Errorf("push manifest %s: %w", r.url(tag), err)
	}
	return dst.Commit(ctx, nil)
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
	if err != nil && gone(ctx, sys, ref) {
		// Deleted by an attempt whose answer was lost, or by another
		// run: what was asked is done.
		return nil
	}
	if isCode(err, errcode.ErrorCodeUnsupported) {
		return permanent{fmt.Errorf("registry %s refuses to delete %s: enable deletes in the registry (distribution: REGISTRY_STORAGE_DELETE_ENABLED=true, or storage.delete.enabled in its config)", reference.Domain(r.repo), tag)}
	}
	if isCode(err, errcode.ErrorCodeDenied) {
		// Rights to read and push often stop short of deletes (a robot
		// account's).
		return exitcode.With(exitcode.Usage, fmt.Errorf("delete %s: %w; the registry lets these credentials read but not delete: give credentials that may delete from the repository", r.url(tag), err))
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", r.url(tag), settingsError(err, r.endpoint(sys)))
	}
	return nil
}

// gone reports whether the registry answers that ref names no manifest.
func gone(ctx context.Context, sys *types.SystemContext, ref types.ImageReference) bool {
	src, err := ref.NewImageSource(ctx, sys)
	if err == nil {
		_, _, err = src.GetManifest(ctx, nil)
		src.Close()
	}
	return notFound(err)
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
