package oci

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	v2 "github.com/docker/distribution/registry/api/v2"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"
	"golang.org/x/sync/errgroup"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// maxManifestBytes bounds what is read of a manifest or backup.json.
const maxManifestBytes = 1 << 20

// loaded is one tag's manifest and backup.json, as far as they could be read.
type loaded struct {
	src    types.ImageSource
	tag    string
	digest digest.Digest
	m      imgspecv1.Manifest
	raw    []byte
	b      *manifest.Backup
	ours   bool
	// layer is the one layer of the image form; nil for an artifact.
	layer *imgspecv1.Descriptor
	// problem says why this is not a complete backup; "" when it is.
	problem string
}

func (l *loaded) close() { l.src.Close() }

// load reads the manifest tag names and its backup.json. It returns nil
// when the tag does not exist, and an error only when the destination
// cannot answer; what is wrong with the content is l.problem.
func (d *Dest) load(ctx context.Context, tag string) (*loaded, error) {
	src, mb, err := d.manifestOf(ctx, tag)
	if err != nil || src == nil {
		return nil, err
	}
	l := &loaded{src: src, tag: tag, digest: digest.FromBytes(mb)}
	if l.problem, err = d.inspect(ctx, l, mb); err != nil {
		src.Close()
		return nil, err
	}
	return l, nil
}

// manifestOf reads the manifest tag names and remembers its digest. It
// returns the source it read from, which the caller closes, or a nil
// source when the tag names nothing.
func (d *Dest) manifestOf(ctx context.Context, tag string) (types.ImageSource, []byte, error) {
	ref, err := d.t.ref(tag)
	if err != nil {
		return nil, nil, exitcode.With(exitcode.Usage, fmt.Errorf("%q is not a valid tag: %w", tag, err))
	}
	var src types.ImageSource
	var mb []byte
	err = d.try(ctx, "read manifest "+tag, func(rctx context.Context) error {
		var err error
		if src == nil {
			s, err := ref.NewImageSource(rctx, d.sys)
			if err != nil {
				return err
			}
			src = s
		}
		mb, _, err = src.GetManifest(rctx, nil)
		return err
	})
	if err != nil && src != nil {
		src.Close()
	}
	why := ""
	if path := lostManifest(err); path != "" {
		why = "its manifest, " + path + ", is missing (a layout copied in part, or a file removed)"
	} else if malformedDigest(err) {
		why = "its index entry names its manifest by a malformed digest (damaged media, or another tool's entry): " + err.Error()
	}
	if why != "" {
		// Skipped, so that the layout's other backups stay within reach.
		d.mu.Lock()
		d.unreadable[tag] = why
		d.mu.Unlock()
		return nil, nil, nil
	}
	if notFound(err) {
		d.mu.Lock()
		d.gone[tag] = err
		d.mu.Unlock()
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", d.t.url(tag), err)
	}
	d.mu.Lock()
	d.digests[tag] = digest.FromBytes(mb)
	d.mu.Unlock()
	return src, mb, nil
}

// lostManifest returns the path of a layout's manifest blob when err says
// that the index names it and its file is gone: a backup that is there,
// and cannot be read, unlike a tag the index does not name.
func lostManifest(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(err, fs.ErrNotExist) && filepath.Base(filepath.Dir(filepath.Dir(pe.Path))) == imgspecv1.ImageBlobsDir {
		return pe.Path
	}
	return ""
}

func notFound(err error) bool {
	var nf layout.ImageNotFoundError
	return errors.As(err, &nf) || errors.Is(err, fs.ErrNotExist) ||
		isCode(err, v2.ErrorCodeManifestUnknown) || isCode(err, v2.ErrorCodeNameUnknown)
}

// inspect fills l from the manifest bytes and says what is wrong, if
// anything. It fails only when backup.json could not be read, which says
// nothing about the backup.
func (d *Dest) inspect(ctx context.Context, l *loaded, mb []byte) (string, error) {
	if len(mb) > maxManifestBytes {
		return "manifest is too large to be a backup", nil
	}
	if err := json.Unmarshal(mb, &l.m); err != nil {
		return "manifest is not JSON: " + err.Error(), nil
	}
	if problem := malformed(&l.m); problem != "" {
		return problem, nil
	}
	var raw []byte
	var err error
	switch {
	case isImage(&l.m):
		l.layer = &l.m.Layers[0]
		raw, err = d.layerManifest(ctx, l.src, *l.layer)
	case l.m.MediaType != imgspecv1.MediaTypeImageManifest || l.m.ArtifactType != ArtifactType:
		return "not a backup written by etcd-backup (artifactType " + strconv.Quote(l.m.ArtifactType) + ")", nil
	default:
		desc, ok := layerNamed(&l.m, manifest.FileName)
		if !ok {
			return "manifest has no " + manifest.FileName + " layer", nil
		}
		raw, err = d.blob(ctx, l.src, desc)
	}
	if exitcode.Of(err) == exitcode.Verify {
		return err.Error(), nil
	}
	if err != nil {
		return "", err
	}
	l.raw = raw
	b, err := manifest.Parse(bytes.NewReader(raw))
	if err != nil {
		return err.Error(), nil
	}
	l.b = b
	if b.Tool.Name != manifest.ToolName {
		return manifest.FileName + " was written by " + strconv.Quote(b.Tool.Name), nil
	}
	l.ours = true
	for _, layer := range l.m.Layers {
		if err := d.t.stored(layer.Digest, layer.Size); err != nil {
			return fmt.Sprintf("layer %s: %v", layer.Annotations[annotationTitle], err), nil
		}
	}
	if l.layer != nil {
		// The files are checked as they are read out of the layer.
		return "", nil
	}
	return filesMatch(&l.m, b), nil
}

// malformed names a digest of m that is not one: damaged media, or another
// tool's manifest. Such a digest is no path to a blob, and go-digest
// panics on one without an algorithm. A config absent altogether is left
// to the checks that follow: an index read as a manifest has none.
func malformed(m *imgspecv1.Manifest) string {
	descs := m.Layers
	if m.Config.Digest != "" {
		descs = append([]imgspecv1.Descriptor{m.Config}, descs...)
	}
	for _, desc := range descs {
		if err := desc.Digest.Validate(); err != nil {
			return fmt.Sprintf("manifest names a malformed digest %q: %v", desc.Digest, err)
		}
	}
	return ""
}

// filesMatch says how the layers differ from what backup.json records.
func filesMatch(m *imgspecv1.Manifest, b *manifest.Backup) string {
	for _, f := range b.Files {
		l, ok := layerNamed(m, f.Name)
		switch {
		case !ok:
			return "manifest has no layer for " + f.Name
		case l.Digest != fileDigest(f) || l.Size != f.Content().Size:
			return fmt.Sprintf("layer %s is %s (%d bytes), %s says %s (%d bytes)", f.Name, l.Digest, l.Size, manifest.FileName, fileDigest(f), f.Content().Size)
		}
	}
	return ""
}

// blob reads a small blob whole and checks its digest.
func (d *Dest) blob(ctx context.Context, src types.ImageSource, desc imgspecv1.Descriptor) ([]byte, error) {
	if desc.Size > maxManifestBytes {
		return nil, exitcode.With(exitcode.Verify, fmt.Errorf("%s is %d bytes, too large", desc.Annotations[annotationTitle], desc.Size))
	}
	var data []byte
	err := d.retry(ctx, "read "+desc.Annotations[annotationTitle], func() error {
		rc, err := d.stream(ctx, src, desc.Annotations[annotationTitle], desc.Digest, desc.Size)
		if err != nil {
			return err
		}
		defer rc.Close()
		data, err = io.ReadAll(io.LimitReader(rc, maxManifestBytes+1))
		return err
	})
	if err != nil {
		return nil, err
	}
	if got := digest.FromBytes(data); got != desc.Digest {
		return nil, exitcode.With(exitcode.Verify, fmt.Errorf("%s has digest %s, the manifest says %s", desc.Annotations[annotationTitle], got, desc.Digest))
	}
	return data, nil
}

// tags lists the destination's tags.
func (d *Dest) tags(ctx context.Context) ([]string, error) {
	var tags []string
	err := d.try(ctx, "list tags", func(rctx context.Context) error {
		var err error
		tags, err = d.t.tags(rctx, d.sys)
		return err
	})
	return tags, err
}

// manifestReaders bounds the tags List reads at once. Each tag is a few
// round trips; one after the other, they would add up over a WAN link for
// every list, `--latest` and retention, as backups accumulate.
const manifestReaders = 8

// List reads one manifest and one backup.json per tag this tool would
// write; other tags are not backups and are not listed.
func (d *Dest) List(ctx context.Context) ([]destination.Entry, error) {
	tags, err := d.tags(ctx)
	if err != nil {
		return nil, err
	}
	tags = slices.DeleteFunc(tags, func(tag string) bool { return !isOurTag(tag) })
	found := make([]*destination.Entry, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(manifestReaders)
	for i, tag := range tags {
		g.Go(func() error {
			l, err := d.load(gctx, tag)
			if err != nil || l == nil {
				d.unlisted(tag)
				return err
			}
			defer l.close()
			e := d.entry(l)
			found[i] = &e
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var out []destination.Entry
	for _, e := range found {
		if e != nil {
			out = append(out, *e)
		}
	}
	slices.SortFunc(out, destination.Compare)
	return out, nil
}

// unlisted warns of a tag that was listed and named no manifest when
// read: deleted since, most often by a prune, or refused in the form this
// client asks for, which the registry's answer says; or whose manifest
// cannot be read.
func (d *Dest) unlisted(tag string) {
	d.mu.Lock()
	err, why := d.gone[tag], d.unreadable[tag]
	d.mu.Unlock()
	switch {
	case why != "":
		d.opts.Log.Warn(d.t.url(tag) + " cannot be read: " + why)
	case err != nil:
		d.opts.Log.Warn(d.t.url(tag)+" is listed, but reading it found no manifest; not listed", "error", err)
	}
}

func (d *Dest) entry(l *loaded) destination.Entry {
	e := destination.Entry{
		Name: l.tag, URL: d.t.url(l.tag), Ours: l.ours, Manifest: l.b, Digest: string(l.digest),
		ClusterID: l.m.Annotations[AnnotationClusterID],
		Timestamp: l.m.Annotations[AnnotationTimestamp],
		State:     destination.Complete, Problem: l.problem,
	}
	e.Created, _ = time.Parse(time.RFC3339, l.m.Annotations[annotationCreated])
	if l.b != nil {
		e.ClusterID, e.Timestamp, e.Created = l.b.ClusterKey(), l.b.Timestamp, l.b.CreatedAt
	}
	if l.problem != "" {
		e.State = destination.Corrupt
	}
	return e
}

// Open returns the backup name names: a tag, a tag pinned to its
// manifest's digest, or that digest alone (see splitBackup). It refuses a
// name that names nothing (exit 2: a mistyped URL, see absent), a tag
// pinned to another manifest (exit 2), and a backup that cannot be read
// or is not a complete backup written by this tool (exit 4).
func (d *Dest) Open(ctx context.Context, name string) (destination.Stored, error) {
	tag, pin, err := d.pinned(ctx, name)
	if err != nil {
		return nil, err
	}
	l, err := d.load(ctx, tag)
	if err != nil {
		return nil, err
	}
	if l != nil && pin != "" && l.digest != pin {
		l.close()
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%s names the manifest %s, not %s: give the tag alone, or the digest alone (%s), to choose between them", d.t.url(tag), l.digest, pin, d.pinURL(pin)))
	}
	if l == nil {
		d.mu.Lock()
		why := d.unreadable[tag]
		d.mu.Unlock()
		if why != "" {
			return nil, exitcode.With(exitcode.Verify, fmt.Errorf("%s cannot be read: %s", d.t.url(tag), why))
		}
		return nil, d.absent(ctx, tag)
	}
	if l.problem != "" {
		l.close()
		return nil, exitcode.With(exitcode.Verify, fmt.Errorf("%s: %s", d.t.url(tag), l.problem))
	}
	return &stored{d: d, l: l}, nil
}

// pinned cuts a backup's name into its tag and the manifest digest it
// pins, if any (see splitBackup); a digest alone is looked up among the
// backups' tags.
func (d *Dest) pinned(ctx context.Context, name string) (string, digest.Digest, error) {
	tag, at, ok := strings.Cut(name, "@")
	if !ok {
		return name, "", nil
	}
	pin := digest.Digest(at)
	if pin.Algorithm() != digest.Canonical {
		return "", "", exitcode.With(exitcode.Usage, fmt.Errorf("%s: backups are named by the %s digest of their manifest, not %s", d.pinURL(pin), digest.Canonical, pin.Algorithm()))
	}
	if tag != "" {
		return tag, pin, nil
	}
	tag, err := d.tagOf(ctx, pin)
	if err != nil {
		return "", "", err
	}
	d.opts.Log.Info(d.pinURL(pin) + " is " + d.t.url(tag))
	return tag, pin, nil
}

// pinURL is the URL that names a backup by its manifest's digest.
func (d *Dest) pinURL(pin digest.Digest) string { return d.URL() + "@" + pin.String() }

// tagOf returns the tag of the backup whose manifest has the digest pin.
// A digest that is one of a backup's files, not its manifest, as upload's
// snapshot-uri gives it, is told as such.
func (d *Dest) tagOf(ctx context.Context, pin digest.Digest) (string, error) {
	tags, err := d.tags(ctx)
	if err != nil {
		return "", err
	}
	tags = slices.DeleteFunc(tags, func(tag string) bool { return !isOurTag(tag) })
	ctx, found := context.WithCancel(ctx)
	defer found()
	var mu sync.Mutex
	var named, holds string
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(manifestReaders)
	for _, tag := range tags {
		g.Go(func() error {
			src, mb, err := d.manifestOf(gctx, tag)
			if err != nil || src == nil {
				return err
			}
			src.Close()
			var m imgspecv1.Manifest
			json.Unmarshal(mb, &m) // a manifest that is not JSON holds no layer
			mu.Lock()
			defer mu.Unlock()
			switch {
			case digest.FromBytes(mb) == pin:
				named = tag
				found()
			case slices.ContainsFunc(m.Layers, func(l imgspecv1.Descriptor) bool { return l.Digest == pin }):
				holds = tag
			}
			return nil
		})
	}
	err = g.Wait()
	switch {
	case named != "":
		return named, nil
	case err != nil:
		return "", err
	case holds != "":
		return "", exitcode.With(exitcode.Usage, fmt.Errorf("%s is one of the files of %s, not a backup's manifest: give %s", pin, d.t.url(holds), d.t.url(holds)))
	}
	return "", exitcode.With(exitcode.Usage, fmt.Errorf("%w %s: no backup in %s has a manifest of that digest (see 'etcd-backup list %s')", destination.ErrNoSuchBackup, d.pinURL(pin), d.URL(), d.URL()))
}

// nearest bounds how many backups absent names.
const nearest = 3

// absent explains a tag that names nothing as a usage error (exit 2), as
// Cloud Storage does a backup name: a mistyped URL is not a backup that
// failed its check. It names the backups of the tag's cluster nearest in
// time, or says there is none.
func (d *Dest) absent(ctx context.Context, tag string) error {
	url := d.t.url(tag)
	if !isOurTag(tag) {
		return exitcode.With(exitcode.Usage, fmt.Errorf("%w %s: its tags are <cluster-id>_<ts>-<snapshot sha256, 12 hex> (see 'etcd-backup list %s')", destination.ErrNoSuchBackup, url, d.URL()))
	}
	tags, err := d.tags(ctx)
	if err != nil {
		return err
	}
	cluster, _, _ := strings.Cut(tag, "_")
	at := tagTime(tag)
	var same []string
	for _, t := range tags {
		if isOurTag(t) && strings.HasPrefix(t, cluster+"_") {
			same = append(same, t)
		}
	}
	if len(same) == 0 {
		return exitcode.With(exitcode.Usage, fmt.Errorf("%w %s: there is no backup of cluster %s in %s (see 'etcd-backup list %s')", destination.ErrNoSuchBackup, url, cluster, d.URL(), d.URL()))
	}
	slices.SortStableFunc(same, func(a, b string) int {
		return cmp.Compare(tagTime(a).Sub(at).Abs(), tagTime(b).Sub(at).Abs())
	})
	var near []string
	for _, t := range same[:min(len(same), nearest)] {
		near = append(near, d.t.url(t))
	}
	return exitcode.With(exitcode.Usage, fmt.Errorf("%w %s; the nearest are %s", destination.ErrNoSuchBackup, url, strings.Join(near, ", ")))
}

// tagTime is the <ts> of a tag isOurTag accepts.
func tagTime(tag string) time.Time {
	_, rest, _ := strings.Cut(tag, "_")
	t, _ := time.Parse(manifest.TimestampLayout, rest[:len(manifest.TimestampLayout)])
	return t
}

type stored struct {
	d *Dest
	l *loaded
}

func (s *stored) Manifest() *manifest.Backup { return s.l.b }
func (s *stored) Raw() []byte                { return s.l.raw }
func (s *stored) Close() error               { return s.l.src.Close() }

// Open streams f's layer under the stall timeout.
func (s *stored) Open(ctx context.Context, f manifest.File) (io.ReadCloser, error) {
	if s.l.layer != nil {
		return s.d.openEntry(ctx, s.l.src, *s.l.layer, f)
	}
	return s.d.stream(ctx, s.l.src, f.Name, fileDigest(f), f.Content().Size)
}

func (d *Dest) stream(ctx context.Context, src types.ImageSource, name string, dg digest.Digest, size int64) (io.ReadCloser, error) {
	wctx, dog, stop := newWatchdog(ctx, d.opts.StallTimeout)
	start := time.Now()
	rc, _, err := src.GetBlob(wctx, types.BlobInfo{Digest: dg, Size: size}, none.NoCache)
	if w, ok := rateLimited(d.host(), start); ok && err != nil {
		err = rateLimitError(err, d.host(), w)
	}
	if notFound(err) || isCode(err, v2.ErrorCodeBlobUnknown) {
		// The manifest names it: the backup is incomplete, not the
		// destination unreachable.
		err = exitcode.With(exitcode.Verify, fmt.Errorf("%w: the backup lacks this file and cannot be restored", err))
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("read %s from %s: %w", name, d.URL(), settingsError(err, d.endpoint()))
	}
	m := &meter{r: rc, dog: dog, log: d.opts.Log, what: "receiving " + name, size: size, every: d.opts.ProgressInterval, last: time.Now()}
	return readCloser{Reader: m, close: func() error { stop(); return rc.Close() }}, nil
}

// PinnedBy returns the URLs of the other tags that name the manifest tag
// names. A registry deletes a manifest with every tag that names it, so
// another tag (a pin such as "golden", made with skopeo copy) would go
// with the backup; Prune leaves such a backup alone, in a layout too.
func (d *Dest) PinnedBy(ctx context.Context, tag string) ([]string, error) {
	dg, err := d.digestOf(ctx, tag)
	if err != nil || dg == "" {
		return nil, err
	}
	tags, err := d.tags(ctx)
	if err != nil {
		return nil, err
	}
	pins := make([]string, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(manifestReaders)
	for i, other := range tags {
		if _, err := d.t.ref(other); other == tag || err != nil {
			// A layout's index may hold names containers/image cannot
			// address; deleting the backup's own entry leaves them be.
			continue
		}
		g.Go(func() error {
			od, err := d.digestOf(gctx, other)
			if od == dg {
				pins[i] = d.t.url(other)
			}
			return err
		})
	}
	err = g.Wait()
	return slices.DeleteFunc(pins, func(u string) bool { return u == "" }), err
}

// digestOf returns the digest of the manifest tag names, "" when it names
// none.
func (d *Dest) digestOf(ctx context.Context, tag string) (digest.Digest, error) {
	d.mu.Lock()
	dg, ok := d.digests[tag]
	d.mu.Unlock()
	if ok {
		return dg, nil
	}
	src, mb, err := d.manifestOf(ctx, tag)
	if err != nil || src == nil {
		return "", err
	}
	src.Close()
	return digest.FromBytes(mb), nil
}

// Delete removes the manifest tag names by its digest, after checking that
// it is a backup this tool wrote, then its attachments. In a registry every
// tag that names the manifest goes with it: Prune asks PinnedBy first.
func (d *Dest) Delete(ctx context.Context, tag string) error {
	// Under the lock another run's prune has deleted the backup or not
	// begun to.
	lock, err := d.t.lock(ctx, d.opts.StallTimeout)
	if err != nil {
		return err
	}
	defer lock.Close()
	l, err := d.load(ctx, tag)
	if err != nil {
		return err
	}
	if l == nil {
		return exitcode.With(exitcode.Usage, fmt.Errorf("%w %s", destination.ErrNoSuchBackup, d.t.url(tag)))
	}
	l.close()
	if !l.ours {
		return fmt.Errorf("%s was not written by etcd-backup (%s): not deleting it", d.t.url(tag), l.problem)
	}
	err = d.try(ctx, "delete "+tag, func(rctx context.Context) error {
		return d.t.delete(rctx, d.sys, tag, l.digest)
	})
	if err := errors.Join(err, d.t.seal()); err != nil {
		return err
	}
	d.dropAttachments(ctx, l.digest)
	return nil
}

// attachments are the tag suffixes under which cosign, and Tekton Chains
// through it, store the signature, attestation and SBOM of a manifest, next
// to it, tagged "sha256-<hex>" of the manifest plus the suffix. They refer
// to nothing but the backup; one of each left per pruned backup would pile
// up in the repository.
var attachments = []string{".sig", ".att", ".sbom"}

// dropAttachments deletes the attachments of the deleted manifest dg. The
// backup is deleted whether or not they are: one left is logged.
func (d *Dest) dropAttachments(ctx context.Context, dg digest.Digest) {
	for _, suffix := range attachments {
		tag := dg.Algorithm().String() + "-" + dg.Encoded() + suffix
		ad, err := d.digestOf(ctx, tag)
		if err == nil && ad != "" {
			err = d.try(ctx, "delete "+tag, func(rctx context.Context) error {
				return d.t.delete(rctx, d.sys, tag, ad)
			})
			err = errors.Join(err, d.t.seal())
			if err == nil {
				d.opts.Log.Info("deleted " + d.t.url(tag) + ", an attachment (signature, attestation or SBOM) of the deleted backup")
			}
		}
		if err != nil {
			d.opts.Log.Warn("could not delete "+d.t.url(tag)+", an attachment of the deleted backup", "err", err)
		}
	}
}
