package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/version"
)

// UploadOptions are the Cloud Storage settings of an upload.
type UploadOptions struct {
	// ResourcesTo, if set, is the prefix the static resources archive goes
	// below instead of Dest (it holds the etcd encryption keys, which may
	// belong in a bucket with narrower access); backup.json records where.
	ResourcesTo *store.URL
	// KMSKey names the Cloud KMS key that encrypts every object (CMEK).
	KMSKey string
}

func (c *Client) metadata(b *manifest.Backup, sha string) map[string]string {
	return map[string]string{
		MetaSHA256:         sha,
		MetaRevision:       strconv.FormatInt(b.Etcd.Revision, 10),
		MetaClusterVersion: b.Cluster.Version,
		MetaClusterID:      b.ClusterKey(),
		MetaWrittenBy:      manifest.ToolName + " " + version.Get().Version,
	}
}

// objectAt is one generation of the object at loc.
type objectAt struct {
	loc        location
	generation int64
}

// removeSent deletes the objects a failed upload created, even once ctx has
// ended (a signal), within a bound of its own. What cannot be removed is a
// leftover without backup.json, which list shows as incomplete and prune
// removes after a day.
func (c *Client) removeSent(ctx context.Context, sent []objectAt) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer cancel()
	for _, s := range sent {
		if err := s.loc.store.Delete(ctx, s.loc.url.Path, s.generation); err != nil {
			c.Log.Warn("could not remove an object of the failed upload; prune removes it after a day", "object", s.loc.url.String(), "err", err)
			continue
		}
		c.Log.Info("removed " + s.loc.url.String() + ": the upload failed")
	}
}

// removeTimeout bounds the clean-up of a failed upload, which may run after
// a SIGTERM, inside the grace period before the SIGKILL.
const removeTimeout = 10 * time.Second

// put creates loc from r unless an object with f's content is already
// there. It returns the object, and whether it was there already.
func (c *Client) put(ctx context.Context, loc location, r io.ReadSeeker, f manifest.File, contentType string, meta map[string]string, kmsKey string) (*store.Object, bool, error) {
	name := loc.url.Path
	switch existing, err := loc.store.Attrs(ctx, name); {
	case err == nil:
		return existing, true, c.alreadyThere(loc, existing, f, meta)
	case !errors.Is(err, store.ErrNotExist):
		return nil, false, err
	}
	obj, err := loc.store.Put(ctx, name, r, store.PutOptions{
		Size:        f.Size,
		CRC32C:      f.CRC32C,
		ContentType: contentType,
		Metadata:    meta,
		KMSKey:      kmsKey,
	})
	if errors.Is(err, store.ErrExist) {
		// Another run got there first, or a retried request of this one
		// landed twice: which, the content says.
		existing, aerr := loc.store.Attrs(ctx, name)
		if aerr != nil {
			return nil, false, errors.Join(err, aerr)
		}
		return existing, true, c.alreadyThere(loc, existing, f, meta)
	}
	if err != nil {
		return nil, false, err
	}
	c.Log.Info("uploaded "+loc.url.String(), "size", obj.Size, "crc32c", fmt.Sprintf("%08x", obj.CRC32C))
	return obj, false, nil
}

// alreadyThere accepts an existing object that holds exactly f, written
// with meta.
func (c *Client) alreadyThere(loc location, obj *store.Object, f manifest.File, meta map[string]string) error {
	if err := same(loc, obj, f, meta); err != nil {
		return err
	}
	c.Log.Info("already uploaded, not sent again: "+loc.url.String(), "sha256", f.SHA256)
	return nil
}

// same says whether obj holds f, by the checksums upload records. One that
// does not is a clash that no retry can resolve: names carry the
// snapshot's digest, so another backup of this cluster never has this
// name, and the object is someone else's (exit 2, as for a wrong DEST).
//
// Encrypted bytes (f.Size < 0) are new on every send and cannot be
// compared: an object is taken as f's when this tool stored it from f's
// plaintext, encrypted to the same keys (meta's fingerprint). That is what
// a run stopped after storing the object and before its commit leaves,
// which a retry must be able to complete: upload cannot delete it. The
// object was created only once its plaintext passed its check, and age
// authenticates it when it is decrypted.
func same(loc location, obj *store.Object, f manifest.File, meta map[string]string) error {
	if f.Size < 0 {
		if obj.Metadata[MetaSHA256] == f.SHA256 && obj.Metadata[MetaEncryptedTo] == meta[MetaEncryptedTo] && writtenByUs(obj) {
			return nil
		}
		return usage(fmt.Errorf("%s already exists and is not %s encrypted to these keys by this tool: nothing was overwritten; not retryable: remove that object (prune removes what an interrupted upload left after a day) or upload to another prefix", loc.url, f.Name))
	}
	if obj.Metadata[MetaSHA256] != f.SHA256 || obj.Size != f.Size || obj.CRC32C != f.CRC32C {
		return usage(fmt.Errorf("%s already exists with other content (%d bytes, sha256 %q, crc32c %08x; this backup has %d bytes, sha256 %s, crc32c %08x): nothing was overwritten; not retryable: remove that object or upload to another prefix",
			loc.url, obj.Size, obj.Metadata[MetaSHA256], obj.CRC32C, f.Size, f.SHA256, f.CRC32C))
	}
	return nil
}

// keysFingerprint identifies a set of public keys, in any order.
func keysFingerprint(keys []string) string {
	sorted := slices.Sorted(slices.Values(keys))
	sum := sha256.Sum256([]byte(strings.Join(sorted, "\n")))
	return hex.EncodeToString(sum[:16])
}
