// Package destination is the seam between the commands and the places a
// backup is stored: a Dest stores and reads whole backups, and a Registry
// picks the kind of Dest from the scheme of a URL.
//
// The contract follows containers/image's ImageDestination: every file of a
// backup is put first, content-addressed by the SHA-256 that backup.json
// records (a file already stored is not sent again), and Commit then writes
// the one thing that makes the backup count as complete. Whatever is left
// by an upload that never committed is not listed as a complete backup.
package destination

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// Dest is one destination: a bucket prefix, a registry repository, a layout
// directory. Backups in it are named by Name, the part a BACKUP argument
// adds to the destination URL.
type Dest interface {
	// Kind names the kind of destination, as errors about it say.
	Kind() string
	// URL is the destination as the user named it.
	URL() string
	// Begin starts storing b. Its files whose Stored is set are stored
	// encrypted, and their stored records are not known yet. Begin fails
	// before anything is sent when the name the backup would get is taken
	// by another backup (manifest.SameBackup); when it is taken by this
	// very backup, the upload sends nothing.
	Begin(ctx context.Context, b *manifest.Backup) (Upload, error)
	// List returns every backup the destination holds, oldest first.
	List(ctx context.Context) ([]Entry, error)
	// Open returns the stored backup with the given name.
	Open(ctx context.Context, name string) (Stored, error)
	// Delete removes the stored backup with the given name. It refuses one
	// that this tool did not write. Open and Delete of a name that holds
	// no backup fail with an error that wraps ErrNoSuchBackup.
	Delete(ctx context.Context, name string) error
	// Close releases what the Dest holds.
	Close() error
}

// Pinner is a Dest where a backup can have other names that deleting it
// would take away too (a registry deletes a manifest with every tag that
// names it). Prune leaves a backup with such a name untouched.
type Pinner interface {
	// PinnedBy returns the URLs of the other names of backup name.
	PinnedBy(ctx context.Context, name string) ([]string, error)
}

// ErrNoSuchBackup is what a Dest's Open or Delete of a name that holds no
// backup fails with, wrapped.
var ErrNoSuchBackup = errors.New("no such backup")

// Opener opens the bytes of one file from its start. Put calls it again for
// each attempt; a reader that fails (a file that fails verification as it
// is read) fails the put, and its bytes are never committed.
type Opener func() (io.ReadCloser, error)

// Upload stores one backup: Put each file it lists, then Commit. Puts of
// different files may run at once.
type Upload interface {
	// Put stores the bytes open yields for f and returns f as stored.
	//
	// When f.Stored is nil they are f's own bytes, content-addressed by
	// f.SHA256, and bytes already stored are not sent again (reused). When
	// f.Stored is set they are f encrypted, new each time open is called:
	// Put records their size and checksums as it sends them, fails with
	// exitcode.Verify unless the service reports holding exactly those
	// bytes, and returns the record in f.Stored.
	Put(ctx context.Context, f manifest.File, open Opener) (stored manifest.File, reused bool, err error)
	// Commit stores b, the backup given to Begin with the files Put
	// returned, as backup.json, which marks the backup complete.
	Commit(ctx context.Context, b *manifest.Backup) (Result, error)
	// Close ends the upload; before Commit it leaves nothing that counts as
	// a complete backup.
	Close() error
}

// Sealed says whether f is to be stored encrypted and its stored bytes are
// not known yet: what Put records as it sends them.
func Sealed(f manifest.File) bool { return f.Stored != nil && f.Stored.SHA256 == "" }

// Result says where a committed backup is.
type Result struct {
	// Name is the backup's name within the destination.
	Name string
	// URL names the backup as a BACKUP argument.
	URL string
	// Digest is the digest of what marks the backup complete (for OCI the
	// manifest), empty where the kind has none.
	Digest string
	// ImageURL is HOST[:PORT]/REPO:TAG for a registry (Tekton Chains'
	// IMAGE_URL), empty otherwise.
	ImageURL string
	// Files addresses each stored file, by name: an object URL, or a
	// blob reference (REPO@sha256:...) in a registry.
	Files map[string]string
}

// State is what a listed backup amounts to.
type State string

// States of a listed backup.
const (
	Complete   State = "complete"
	Incomplete State = "incomplete"
	Corrupt    State = "corrupt"
)

// Entry is one listed backup.
type Entry struct {
	Name      string
	URL       string
	ClusterID string
	// Timestamp is the backup's <ts>.
	Timestamp string
	Created   time.Time
	State     State
	// Problem says why the State is not Complete.
	Problem string
	// Ours is true when this tool wrote the backup; nothing else is pruned.
	Ours bool
	// Manifest is the backup's backup.json when it could be read.
	Manifest *manifest.Backup
	// Digest is the digest of what marks the backup complete (for OCI the
	// manifest, which names the backup too), empty where the kind has none.
	Digest string
}

// Dated returns the time in the backup's <ts>: its master's clock when it
// was taken. It is zero when <ts> is malformed.
func (e Entry) Dated() time.Time {
	t, _ := time.Parse(manifest.TimestampLayout, e.Timestamp)
	return t
}

// Forced says whether the backup was taken with --force: its preflight
// checks skipped, and possibly dirty.
func (e Entry) Forced() bool { return e.Manifest != nil && e.Manifest.Dirty }

// Stored is one backup opened for reading.
type Stored interface {
	// Manifest is the parsed backup.json.
	Manifest() *manifest.Backup
	// Raw is backup.json exactly as stored.
	Raw() []byte
	// Open returns the stored bytes of f, unchecked: callers verify them.
	Open(ctx context.Context, f manifest.File) (io.ReadCloser, error)
	Close() error
}

// Options configure every kind of destination.
type Options struct {
	Log *slog.Logger
	// ProgressInterval is how often a long transfer logs its progress.
	ProgressInterval time.Duration
	// StallTimeout fails a transfer that moves no data for this long, and
	// bounds every single request.
	StallTimeout time.Duration
	// RetryBase is the first wait before a transient failure is retried;
	// it doubles for each of the few retries.
	RetryBase time.Duration
	// ScratchDir holds caches a kind needs while it runs; empty means the
	// system temporary directory. Nothing is written under $HOME.
	ScratchDir string
	// Registry settings for docker:// and oci:.
	Registry RegistryOptions
	// GCS settings for gs://.
	GCS GCSOptions
}

// GCSOptions are the Cloud Storage settings of an upload.
type GCSOptions struct {
	// KMSKey names the Cloud KMS key that encrypts every object (CMEK).
	KMSKey string
	// ResourcesTo, a gs:// prefix, is where the static resources archive
	// goes instead, as backup.json records.
	ResourcesTo string
	// EmulatorHost is $STORAGE_EMULATOR_HOST.
	EmulatorHost string
	// CredentialsFile is $GOOGLE_APPLICATION_CREDENTIALS.
	CredentialsFile string
}

// RegistryOptions are the podman and skopeo settings for OCI destinations.
type RegistryOptions struct {
	// AuthFile is a containers-auth.json or .dockerconfigjson file; empty
	// means $REGISTRY_AUTH_FILE, then the podman defaults.
	AuthFile string
	// CertDir holds ca.crt, and client.cert/client.key for mutual TLS.
	CertDir string
	// InsecureSkipTLSVerify turns TLS verification off (and allows plain
	// HTTP); only --tls-verify=false sets it.
	InsecureSkipTLSVerify bool
	// Format is FormatArtifact (the default) or FormatImage.
	Format string
}

// OCI formats.
const (
	FormatArtifact = "artifact"
	FormatImage    = "image"
)

// WithDefaults fills in what is unset.
func (o Options) WithDefaults() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 30 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = time.Minute
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.Registry.Format == "" {
		o.Registry.Format = FormatArtifact
	}
	return o
}
