package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// ArtifactType marks a manifest as a backup written by this tool.
const ArtifactType = "application/vnd.etcd-backup.backup.v1"

// Manifest annotations besides org.opencontainers.image.created, so that
// list reads one manifest per tag and no data.
const (
	annPrefix            = "io.etcd-backup."
	AnnotationClusterID  = annPrefix + "cluster-id"
	AnnotationVersion    = annPrefix + "cluster-version"
	AnnotationRevision   = annPrefix + "etcd-revision"
	AnnotationDirty      = annPrefix + "dirty"
	AnnotationTimestamp  = annPrefix + "timestamp"
	AnnotationFormat     = annPrefix + "format"
	annotationTitle      = imgspecv1.AnnotationTitle
	annotationCreated    = imgspecv1.AnnotationCreated
	maxTagLength         = 128
	maxClusterTagLength  = 64
	snapshotDigestPrefix = 12
)

// Layer media types. Registries that keep an allow-list of layer types
// (Harbor, Quay, Artifactory, some cloud registries) accept the standard
// OCI layer types everywhere, while a vendor type such as
// application/vnd.etcd.snapshot may be refused; ORAS uses the plain tar
// type for arbitrary files for the same reason. The archive is a real
// gzipped tar; nothing unpacks the others, because the artifactType and the
// empty config say this is no image.
const (
	mediaTypeFile    = imgspecv1.MediaTypeImageLayer
	mediaTypeArchive = imgspecv1.MediaTypeImageLayerGzip
)

// emptyConfig is the OCI empty descriptor's content.
var emptyConfig = []byte("{}")

var emptyDescriptor = imgspecv1.Descriptor{
	MediaType: imgspecv1.MediaTypeEmptyJSON,
	Digest:    digest.FromBytes(emptyConfig),
	Size:      int64(len(emptyConfig)),
	Data:      emptyConfig,
}

// tagPattern matches the tags Tag makes: <cluster>_<ts>-<12 hex>.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,63}_\d{4}-\d{2}-\d{2}_\d{6}-[0-9a-f]{12}$`)

// Tag names backup b: its cluster, its <ts> and the first 12 hex digits of
// its snapshot's SHA-256, so that two backups of one cluster in the same
// second get different tags, and tags of one cluster sort by time.
func Tag(b *manifest.Backup) string {
	sha := ""
	if f := b.File(manifest.KindSnapshot); f != nil && len(f.SHA256) >= snapshotDigestPrefix {
		sha = f.SHA256[:snapshotDigestPrefix]
	}
	return clusterTag(b.ClusterKey()) + "_" + b.Timestamp + "-" + sha
}

// clusterTag keeps a cluster ID within the tag charset; an OpenShift
// cluster ID (a UUID) and an etcd cluster ID (hex) pass unchanged.
func clusterTag(id string) string {
	s := []byte(id)
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			s[i] = '-'
		}
	}
	t := string(s)
	if len(t) > maxClusterTagLength {
		t = t[:maxClusterTagLength]
	}
	if t == "" || !isAlnum(t[0]) {
		t = "c" + t
		t = t[:min(len(t), maxClusterTagLength)]
	}
	return t
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// isOurTag reports whether tag has the shape Tag gives.
func isOurTag(tag string) bool {
	return len(tag) <= maxTagLength && tagPattern.MatchString(tag)
}

// fileDigest is the digest of f's layer: its stored bytes.
func fileDigest(f manifest.File) digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, f.Content().SHA256)
}

func rawDigest(raw []byte) digest.Digest {
	sum := sha256.Sum256(raw)
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
}

// mediaType is the layer type of f. An encrypted file is an age file, not
// gzip: it gets the plain type, and backup.json says how it is stored.
func mediaType(f manifest.File) string {
	if f.Kind == manifest.KindResources && f.Stored == nil {
		return mediaTypeArchive
	}
	return mediaTypeFile
}

func annotations(b *manifest.Backup, format string) map[string]string {
	return map[string]string{
		annotationCreated:   b.CreatedAt.UTC().Format(time.RFC3339),
		AnnotationClusterID: b.ClusterKey(),
		AnnotationVersion:   b.Cluster.Version,
		AnnotationRevision:  strconv.FormatInt(b.Etcd.Revision, 10),
		AnnotationDirty:     strconv.FormatBool(b.Dirty),
		AnnotationTimestamp: b.Timestamp,
		AnnotationFormat:    format,
	}
}

func layer(name string, d digest.Digest, size int64, media string) imgspecv1.Descriptor {
	return imgspecv1.Descriptor{MediaType: media, Digest: d, Size: size, Annotations: map[string]string{annotationTitle: name}}
}

// artifactManifest is the image-spec 1.1 artifact manifest of b: the empty
// config and one layer per file, backup.json last.
func artifactManifest(b *manifest.Backup, raw []byte) ([]byte, error) {
	m := imgspecv1.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    imgspecv1.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       emptyDescriptor,
		Annotations:  annotations(b, "artifact"),
	}
	for _, f := range b.Files {
		m.Layers = append(m.Layers, layer(f.Name, fileDigest(f), f.Content().Size, mediaType(f)))
	}
	m.Layers = append(m.Layers, layer(manifest.FileName, rawDigest(raw), int64(len(raw)), mediaTypeFile))
	return json.Marshal(m)
}

// layerNamed returns the layer titled name.
func layerNamed(m *imgspecv1.Manifest, name string) (imgspecv1.Descriptor, bool) {
	for _, l := range m.Layers {
		if l.Annotations[annotationTitle] == name {
			return l, true
		}
	}
	return imgspecv1.Descriptor{}, false
}

// splitFor returns the Factory.Split of the kind scheme, whose BACKUP
// arguments take the forms named.
func splitFor(scheme, forms string) func(rest string) (string, string, error) {
	return func(rest string) (string, string, error) {
		where, name, err := splitBackup(rest)
		switch {
		case errors.Is(err, errNoName):
			return "", "", fmt.Errorf("%s %w: use %s", shown(scheme+":"+rest), err, forms)
		case err != nil:
			return "", "", fmt.Errorf("%s %w", shown(scheme+":"+rest), err)
		}
		return where, name, nil
	}
}

// errNoName is a BACKUP argument that names no backup in its destination.
var errNoName = errors.New("names no backup")

// splitBackup cuts a BACKUP argument, after its scheme, into where the
// backup is and its name there: X:TAG; X@DIGEST, the backup whose manifest
// has that digest, as Tekton Chains records an upload (IMAGE_DIGEST) and
// OpenShift's mirrors name images; or X:TAG@DIGEST, the backup under TAG,
// whose manifest must have that digest. A name that pins a digest holds
// "@DIGEST". Only an @ followed by a digest algorithm's name pins: a
// layout's path may hold an @.
func splitBackup(s string) (string, string, error) {
	if at := strings.LastIndex(s, "@"); at > strings.LastIndex(s, "/") && pinLike(s[at+1:]) {
		pin := digest.Digest(s[at+1:])
		if err := pin.Validate(); err != nil {
			return "", "", fmt.Errorf("names a malformed digest %q: %w", pin, err)
		}
		if where, tag, ok := splitTag(s[:at]); ok {
			return where, tag + "@" + pin.String(), nil
		}
		if at == 0 {
			return "", "", errNoName
		}
		return s[:at], "@" + pin.String(), nil
	}
	where, tag, ok := splitTag(s)
	if !ok {
		return "", "", errNoName
	}
	return where, tag, nil
}

// pinLike says whether s begins as a digest does: an algorithm's name
// (sha256, sha384, sha512), then a colon.
func pinLike(s string) bool {
	alg, _, ok := strings.Cut(s, ":")
	return ok && digest.Algorithm(alg).Available()
}

// splitTag cuts "X:TAG" at its last colon, which must come after the last
// slash so that HOST:PORT is not taken for a tag.
func splitTag(s string) (string, string, bool) {
	i := strings.LastIndex(s, ":")
	if i < 0 || i < strings.LastIndex(s, "/") || i == len(s)-1 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}
