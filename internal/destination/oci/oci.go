// Package oci stores backups in OCI registries (docker://HOST[:PORT]/REPO)
// and OCI image layout directories (oci:PATH) through containers/image: one
// image-spec 1.1 manifest per backup, with one layer per file whose digest
// is the file's SHA-256, pushed last as the commit marker.
package oci

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	v2 "github.com/docker/distribution/registry/api/v2"
	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"
	"golang.org/x/sync/errgroup"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/version"
)

// Dest is a repository or a layout directory.
type Dest struct {
	t       transport
	sys     *types.SystemContext
	opts    destination.Options
	scratch string
	// creds names the auth file given with an entry for the registry
	// ("--authfile FILE"), or is "".
	creds string

	mu sync.Mutex
	// digests holds the manifest digest of each tag read so far: a tag of
	// this tool's never moves, and PinnedBy reads each other tag once.
	digests map[string]digest.Digest
	// gone holds why each tag read so far named no manifest.
	gone map[string]error
	// unreadable holds why each tag read so far that a layout's index
	// names has a manifest that cannot be read.
	unreadable map[string]string
}

var (
	_ destination.Dest   = (*Dest)(nil)
	_ destination.Pinner = (*Dest)(nil)
	_ destination.Hinter = (*Dest)(nil)
)

func open(t transport, opts destination.Options) (*Dest, error) {
	if f := opts.Registry.Format; f != destination.FormatArtifact && f != destination.FormatImage {
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("OCI format %q is neither %q nor %q", f, destination.FormatArtifact, destination.FormatImage))
	}
	authFile, given := opts.Registry.AuthFile, "--authfile"
	if authFile == "" {
		authFile, given = os.Getenv("REGISTRY_AUTH_FILE"), "$REGISTRY_AUTH_FILE"
	}
	keys, legacy, err := checkAuthFile(authFile, given)
	if err := cmp.Or(err, checkCertDir(opts.Registry.CertDir)); err != nil {
		return nil, exitcode.With(exitcode.Usage, err)
	}
	var creds string
	if r, ok := t.(registry); ok && authFile != "" {
		if r.uncovered(keys) {
			// A near miss (another port, a typo) would only show as the
			// registry's refusal, blamed on the credentials.
			slices.Sort(keys)
			opts.Log.Warn(fmt.Sprintf("%s %s has no entry for %s (its entries: %s): requests to it go without credentials; an entry names the registry exactly, with its port", given, authFile, r.host(), cmp.Or(strings.Join(keys, ", "), "none")))
		} else {
			creds = given + " " + authFile
		}
	}
	// containers/image keeps a blob cache and may consult lookaside
	// signature storage; both go to a scratch directory, not $HOME or
	// /var/lib/containers.
	scratch, err := os.MkdirTemp(opts.ScratchDir, "etcd-backup-oci-*")
	if err != nil {
		return nil, fmt.Errorf("create scratch directory: %w", err)
	}
	sys := &types.SystemContext{
		AuthFilePath:            authFile,
		DockerCertPath:          opts.Registry.CertDir,
		BlobInfoCacheDir:        scratch,
		RegistriesDirPath:       scratch,
		DockerRegistryUserAgent: "etcd-backup/" + version.Version,
	}
	if legacy {
		sys.AuthFilePath, sys.LegacyFormatAuthFilePath = "", authFile
	}
	if opts.Registry.InsecureSkipTLSVerify {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
		sys.OCIInsecureSkipTLSVerify = true
	}
	return &Dest{t: t, sys: sys, opts: opts, scratch: scratch, creds: creds, digests: map[string]digest.Digest{}, gone: map[string]error{}, unreadable: map[string]string{}}, nil
}

// Kind names the destination in errors.
func (d *Dest) Kind() string { return d.t.kind() }

// URL is the destination without a tag.
func (d *Dest) URL() string {
	u := d.t.url("")
	return u[:len(u)-1]
}

// host is the registry's host; a layout has none.
func (d *Dest) host() string {
	if r, ok := d.t.(registry); ok {
		return r.host()
	}
	return ""
}

// endpoint is where the registry's requests go; its host is "" for a
// layout.
func (d *Dest) endpoint() endpoint {
	if r, ok := d.t.(registry); ok {
		e := r.endpoint(d.sys)
		e.creds = d.creds
		return e
	}
	return endpoint{}
}

// Nearby says what the destination holds where it holds no backup.
func (d *Dest) Nearby(ctx context.Context) (string, error) {
	rctx, cancel := d.request(ctx)
	defer cancel()
	return d.t.nearby(rctx, d.sys), nil
}

// Close removes the scratch directory.
func (d *Dest) Close() error { return os.RemoveAll(d.scratch) }

// request bounds one request that moves no bulk data. net/http names the
// cause where the deadline cuts a request off, in place of "context
// deadline exceeded".
func (d *Dest) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d.opts.StallTimeout, fmt.Errorf("%w (%s)", errNoAnswer, d.opts.StallTimeout))
}

// try runs op as retry does, each attempt under a request deadline of its
// own: an attempt that stalls must not leave the next ones no time at all.
func (d *Dest) try(ctx context.Context, what string, op func(rctx context.Context) error) error {
	return d.retry(ctx, what, func() error {
		rctx, cancel := d.request(ctx)
		defer cancel()
		return op(rctx)
	})
}

// Begin checks that the backup's tag is free, or already names this very
// backup (a re-run, which then sends nothing), and opens the destination.
func (d *Dest) Begin(ctx context.Context, b *manifest.Backup) (destination.Upload, error) {
	tag := Tag(b)
	up := &upload{d: d, b: b, tag: tag, stored: map[string]bool{}, image: d.opts.Registry.Format == destination.FormatImage, openers: map[string]destination.Opener{}}
	if up.image && b.Encrypted() {
		return nil, exitcode.With(exitcode.Usage, errors.New("--oci-format image stores the files as one tar layer, which this version does not encrypt: use --oci-format artifact with --encrypt-to"))
	}
	if r, ok := d.t.(registry); ok && r.inCluster() {
		d.opts.Log.Warn(d.URL() + " is in the cluster's own image registry, which is down when the cluster is: a backup there cannot be fetched to restore it; give a registry outside the cluster")
	}
	done, err := d.alreadyStored(ctx, tag, b)
	if err != nil {
		return nil, err
	}
	if done != nil {
		d.opts.Log.Info("backup already stored", "backup", d.t.url(tag), "digest", done.digest)
		up.done = done
		return up, nil
	}
	if err := d.t.prepare(up.largest()); err != nil {
		return nil, layoutError(err)
	}
	ref, err := d.t.ref(tag)
	if err != nil {
		return nil, err
	}
	rctx, cancel := d.request(ctx)
	defer cancel()
	up.dst, err = ref.NewImageDestination(rctx, d.sys)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d.t.url(tag), err)
	}
	if !up.image {
		up.sendEarly(ctx)
	}
	return up, nil
}

// largest names the largest blob the upload writes, and its size: the
// image form's one layer holds every file, and a file stored encrypted
// grows by a few bytes in each 64 KiB, which its plaintext size leaves out.
func (u *upload) largest() (string, int64) {
	name, size := "", int64(0)
	for _, f := range u.b.Files {
		n := f.Size
		if u.image {
			name, size = "the image's layer", size+n
		} else if n > size {
			name, size = f.Name, n
		}
	}
	return name, size
}

// sendEarly sends, while the files go, the blobs Commit needs besides
// them: the config, and backup.json when its content is known already
// (files stored unencrypted are stored as they are, so Commit's
// backup.json is Begin's). Each is a few round trips that would otherwise
// come after the snapshot's last byte. Commit sends whatever this did not.
func (u *upload) sendEarly(ctx context.Context) {
	u.early.Go(func() {
		u.earlyConfig = u.putConfig(ctx) == nil
	})
	if u.b.Encrypted() {
		return
	}
	data, err := manifest.Marshal(u.b)
	if err != nil {
		return
	}
	u.early.Go(func() {
		if u.putJSON(ctx, data) == nil {
			u.earlyJSON = data
		}
	})
}

func (u *upload) putJSON(ctx context.Context, data []byte) error {
	info := types.BlobInfo{Digest: rawDigest(data), Size: int64(len(data)), MediaType: mediaTypeFile}
	_, err := u.put(ctx, manifest.FileName, info, bytesOpener(data), false)
	return err
}

func (u *upload) putConfig(ctx context.Context) error {
	cfg := types.BlobInfo{Digest: emptyDescriptor.Digest, Size: emptyDescriptor.Size, MediaType: emptyDescriptor.MediaType}
	_, err := u.put(ctx, "config", cfg, bytesOpener(emptyConfig), true)
	return err
}

// alreadyStored returns what tag names when that is this backup, nil when
// tag is free, and an error when it names anything else.
func (d *Dest) alreadyStored(ctx context.Context, tag string, b *manifest.Backup) (*loaded, error) {
	l, err := d.load(ctx, tag)
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, nil
	}
	l.close()
	same := l.ours && manifest.SameBackup(l.b, b)
	switch {
	case same && l.problem == "":
		return l, nil
	case same:
		// A re-run to mend a backup whose blob was cut short or removed:
		// it is not other content, and the stored entry is not this
		// upload's to replace.
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s already holds this backup, damaged (%s); a tag is never overwritten: remove it (skopeo delete %s), then upload again", d.t.url(tag), l.problem, d.t.url(tag)))
	}
	// As for an object of Cloud Storage: no retry can cure it (exit 2).
	return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s already names other content (manifest %s); a tag is never overwritten: remove it or upload elsewhere", d.t.url(tag), l.digest))
}

type upload struct {
	d   *Dest
	b   *manifest.Backup
	tag string
	dst types.ImageDestination
	// done is the stored backup when it was stored before.
	done *loaded
	// image: the image form, whose one layer Commit sends from openers.
	image bool
	// early sends the config and backup.json while the files go; what it
	// sent is earlyConfig and earlyJSON, read once early is waited for.
	early       sync.WaitGroup
	earlyConfig bool
	earlyJSON   []byte
	// mu guards stored and openers, which concurrent Puts add to.
	mu sync.Mutex
	// stored holds the files put so far; Commit needs every one.
	stored  map[string]bool
	openers map[string]destination.Opener
}

func (u *upload) Put(ctx context.Context, f manifest.File, open destination.Opener) (manifest.File, bool, error) {
	if u.done != nil {
		if sf := u.done.b.File(f.Kind); sf != nil {
			return *sf, true, nil
		}
		return f, false, fmt.Errorf("%s holds no %s", u.d.t.url(u.tag), f.Name)
	}
	stored, reused, err := f, false, error(nil)
	switch {
	case u.image:
		// Commit reads every file into the one layer.
	case destination.Sealed(f):
		stored, err = u.seal(ctx, f, open)
	default:
		info := types.BlobInfo{Digest: fileDigest(f), Size: f.Size, MediaType: mediaType(f)}
		reused, err = u.put(ctx, f.Name, info, open, false)
	}
	if err != nil {
		return stored, false, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.stored[f.Name] = true
	if u.image {
		u.openers[f.Name] = open
	}
	return stored, reused, nil
}

// seal sends f encrypted, and records the stored bytes.
func (u *upload) seal(ctx context.Context, f manifest.File, open destination.Opener) (manifest.File, error) {
	got, crc, err := u.sendUnknown(ctx, f.Name, mediaType(f), open)
	if err != nil {
		return f, err
	}
	s := *f.Stored
	s.Size, s.SHA256, s.CRC32C = got.Size, got.Digest.Encoded(), crc
	f.Stored = &s
	return f, nil
}

// sendUnknown sends bytes not known in advance: containers/image and the
// registry digest them as they go, and the blob is only accepted under the
// digest they agree on, computed from the bytes read as they went. It
// returns the blob and the CRC32C of what was sent.
func (u *upload) sendUnknown(ctx context.Context, name, media string, open destination.Opener) (types.BlobInfo, uint32, error) {
	var sent *manifest.Digest
	var got types.BlobInfo
	info := types.BlobInfo{Size: -1, MediaType: media}
	err := u.d.retry(ctx, "send "+name, func() error {
		sent = manifest.NewChecksum()
		digested := func() (io.ReadCloser, error) {
			r, err := open()
			if err != nil {
				return nil, err
			}
			return readCloser{Reader: io.TeeReader(r, sent), close: r.Close}, nil
		}
		var err error
		got, err = u.send(ctx, name, info, digested, false)
		return err
	})
	if err != nil {
		return got, 0, fmt.Errorf("send %s to %s: %w", name, u.d.URL(), err)
	}
	if got.Digest.Validate() != nil || got.Digest.Algorithm() != digest.SHA256 || got.Size != sent.Size() {
		return got, 0, exitcode.With(exitcode.Verify, fmt.Errorf("send %s to %s: stored as %s (%d bytes), %d bytes were sent", name, u.d.URL(), got.Digest, got.Size, sent.Size()))
	}
	u.d.opts.Log.Info("sent "+name, "digest", got.Digest, "bytes", got.Size)
	return got, sent.CRC32C(), nil
}

// put sends one blob unless the destination has it already.
func (u *upload) put(ctx context.Context, name string, info types.BlobInfo, open destination.Opener, isConfig bool) (bool, error) {
	var reused bool
	err := u.d.try(ctx, "check for "+name, func(rctx context.Context) error {
		var err error
		reused, _, err = u.dst.TryReusingBlob(rctx, info, none.NoCache, false)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("check for %s in %s: %w", name, u.d.URL(), err)
	}
	if reused {
		u.d.opts.Log.Info("already stored "+name, "digest", info.Digest)
		return true, nil
	}
	err = u.d.retry(ctx, "send "+name, func() error {
		_, err := u.send(ctx, name, info, open, isConfig)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("send %s to %s: %w", name, u.d.URL(), err)
	}
	u.d.opts.Log.Info("sent "+name, "digest", info.Digest, "bytes", info.Size)
	return false, nil
}

func (u *upload) send(ctx context.Context, name string, info types.BlobInfo, open destination.Opener, isConfig bool) (types.BlobInfo, error) {
	r, err := open()
	if err != nil {
		return types.BlobInfo{}, permanent{err}
	}
	defer r.Close()
	wctx, dog, stop := newWatchdog(ctx, u.d.opts.StallTimeout)
	defer stop()
	m := &meter{r: r, dog: dog, log: u.d.opts.Log, what: "sending " + name, size: info.Size, every: u.d.opts.ProgressInterval, last: time.Now()}
	got, err := u.dst.PutBlob(wctx, m, info, none.NoCache, isConfig)
	switch {
	case m.err != nil:
		// The source failed (a file that fails its check): PutBlob
		// dropped what it had, and a retry would read the same.
		return got, permanent{m.err}
	case err != nil && context.Cause(wctx) != nil && ctx.Err() == nil:
		return got, context.Cause(wctx)
	}
	return got, u.d.noRepository(err)
}

// Commit sends backup.json and the config, then the manifest: the commit
// marker, pushed only while the tag is still free.
func (u *upload) Commit(ctx context.Context, b *manifest.Backup) (destination.Result, error) {
	res := destination.Result{Name: u.tag, URL: u.d.t.url(u.tag), ImageURL: u.d.t.imageURL(u.tag), Files: map[string]string{}}
	if u.done != nil {
		b = u.done.b
		res.Digest = string(u.done.digest)
	}
	for _, f := range b.Files {
		res.Files[f.Name] = u.d.t.blobURL(fileDigest(f))
	}
	if u.done != nil {
		res.Files[manifest.FileName] = u.d.t.blobURL(rawDigest(u.done.raw))
		if u.done.layer != nil {
			for name := range res.Files {
				res.Files[name] = u.d.t.blobURL(u.done.layer.Digest)
			}
		}
		return res, nil
	}
	for _, f := range b.Files {
		if !u.stored[f.Name] {
			return res, fmt.Errorf("commit %s: %s was not stored", res.URL, f.Name)
		}
	}
	data, err := manifest.Marshal(b)
	if err != nil {
		return res, err
	}
	res.Files[manifest.FileName] = u.d.t.blobURL(rawDigest(data))
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("commit %s: %w", res.URL, context.Cause(ctx))
	}
	if u.image {
		if err := u.commitImage(ctx, b, data, &res); err != nil {
			return res, err
		}
		u.d.opts.Log.Info("committed "+res.URL, "digest", res.Digest, "format", destination.FormatImage)
		return res, nil
	}
	// From the second look at the tag to the manifest, the commit is
	// one run's at a time where the destination does not see to that.
	lock, err := u.d.t.lock(ctx, u.d.opts.StallTimeout)
	if err != nil {
		return res, err
	}
	defer lock.Close()
	// A second look at the tag (another writer may have taken it since
	// Begin) goes at once with whatever of backup.json and the config
	// Begin's early send did not store: each costs round trips, not
	// bandwidth.
	g, gctx := errgroup.WithContext(ctx)
	var taken *loaded
	g.Go(func() error {
		var err error
		taken, err = u.d.alreadyStored(gctx, u.tag, b)
		return err
	})
	u.early.Wait() // what failed there is sent again here
	if !bytes.Equal(u.earlyJSON, data) {
		g.Go(func() error { return u.putJSON(gctx, data) })
	}
	if !u.earlyConfig {
		g.Go(func() error { return u.putConfig(gctx) })
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	m, err := artifactManifest(b, data)
	if err != nil {
		return res, err
	}
	res.Digest = string(digest.FromBytes(m))
	if taken == nil {
		if err := u.push(ctx, m); err != nil {
			return res, err
		}
	}
	u.d.opts.Log.Info("committed "+res.URL, "digest", res.Digest)
	return res, nil
}

// bytesOpener opens data, a small blob held in memory.
func bytesOpener(data []byte) destination.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

// pushManifest pushes m unless another writer took the tag since Begin.
func (u *upload) pushManifest(ctx context.Context, b *manifest.Backup, m []byte) error {
	lock, err := u.d.t.lock(ctx, u.d.opts.StallTimeout)
	if err != nil {
		return err
	}
	defer lock.Close()
	if done, err := u.d.alreadyStored(ctx, u.tag, b); err != nil || done != nil {
		return err
	}
	return u.push(ctx, m)
}

// push pushes the manifest m under the upload's tag: the commit marker.
// A registry that refuses an artifact's manifest, as mirrors that take
// only images do, is a usage error that names the form they take.
func (u *upload) push(ctx context.Context, m []byte) error {
	err := u.d.try(ctx, "push manifest of "+u.tag, func(rctx context.Context) error {
		if err := u.d.t.commit(rctx, u.d.sys, u.dst, u.tag, m); err != nil {
			return err
		}
		// A backup is reported stored once it is durable.
		return u.d.t.seal()
	})
	var rejected types.ManifestTypeRejectedError
	if !u.image && errors.As(err, &rejected) {
		return exitcode.With(exitcode.Usage, fmt.Errorf("%w; the registry takes no OCI artifact, as mirrors that take only images do: upload with --oci-format image", err))
	}
	return u.d.noRepository(err)
}

// noRepository says what to do when a push is refused because the
// repository, or the project above it (Harbor), does not exist and the
// registry creates none on a push.
func (d *Dest) noRepository(err error) error {
	if !isCode(err, v2.ErrorCodeNameUnknown) || exitcode.Of(err) == exitcode.Usage {
		return err
	}
	return exitcode.With(exitcode.Usage, fmt.Errorf("%w; the registry will not create %s on a push: create it first (Harbor: its project; Quay: the repository, or give the account the right to create repositories), or give another", err, d.URL()))
}

func (u *upload) Close() error {
	if u.dst == nil {
		return nil
	}
	u.early.Wait()
	return errors.Join(u.dst.Close(), u.d.t.seal())
}
