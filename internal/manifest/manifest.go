// Package manifest holds backup.json: the record of one backup that verify,
// list, upload, download and prune trust, and nothing else.
//
// The file is written last into a backup directory (and uploaded last to a
// destination), so its presence marks a backup as complete. Its name matches
// neither glob that cluster-restore.sh uses to pair the snapshot and archive.
package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// FileName is the name of the manifest inside a backup.
const FileName = "backup.json"

// ToolName is Tool.Name in the backups this program writes; prune touches
// no backup that another tool wrote.
const ToolName = "etcd-backup"

// Schema versions. A backup stored as it was saved is written as
// SchemaPlain, which older builds read too; one whose files are stored
// encrypted (File.Stored) as SchemaStored, which they must refuse.
const (
	SchemaPlain  = 1
	SchemaStored = 2
	// SchemaVersion is the newest version this build reads.
	SchemaVersion = SchemaStored
)

// TimestampLayout formats the <ts> part of file names: YYYY-MM-DD_HHMMSS in UTC.
const TimestampLayout = "2006-01-02_150405"

// DirtySuffix marks files of a backup taken with --force, as cluster-backup.sh does.
const DirtySuffix = "__POSSIBLY_DIRTY__"

// File kinds.
const (
	KindSnapshot  = "snapshot"
	KindResources = "resources"
)

// maxManifestSize bounds what Parse reads: a manifest is a few KiB.
const maxManifestSize = 1 << 20

// Backup is the content of backup.json.
type Backup struct {
	SchemaVersion int       `json:"schemaVersion"`
	Tool          Tool      `json:"tool"`
	CreatedAt     time.Time `json:"createdAt"`
	// Timestamp is the <ts> string shared by the names of the backup's files.
	Timestamp string `json:"timestamp"`
	// Dirty is set when preflight checks were skipped (--force).
	Dirty bool `json:"dirty"`
	// SkippedChecks names the preflight checks that did not run, and why.
	SkippedChecks []SkippedCheck `json:"skippedChecks"`
	Cluster       Cluster        `json:"cluster"`
	Etcd          Etcd           `json:"etcd"`
	StaticPods    []StaticPod    `json:"staticPods"`
	// EncryptionConfigArchived is true when the archive holds the
	// kube-apiserver encryption config: without it encrypted resources in the
	// snapshot cannot be read after a restore.
	EncryptionConfigArchived bool `json:"encryptionConfigArchived"`
	// EarliestCertExpiry is the certificate in the archive that expires first.
	EarliestCertExpiry *CertExpiry `json:"earliestCertExpiry,omitempty"`
	Files              []File      `json:"files"`
	// Locations records where files were uploaded when they do not sit next
	// to backup.json (upload --resources-to), keyed by file name.
	Locations map[string]string `json:"locations,omitempty"`
}

// Tool identifies the program that wrote the backup.
type Tool struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
}

// SkippedCheck is a preflight check that did not run.
type SkippedCheck struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Cluster describes the cluster the backup came from.
type Cluster struct {
	// ID is the OpenShift ClusterVersion spec.clusterID; empty on plain Kubernetes.
	ID string `json:"id,omitempty"`
	// Version is the z-stream version the cluster runs (ClusterVersion history).
	Version string `json:"version,omitempty"`
	// UpgradeInProgress is true when the ClusterVersion was mid-upgrade.
	UpgradeInProgress bool `json:"upgradeInProgress"`
	// Platform is "openshift" or "kubernetes".
	Platform string `json:"platform"`
	// CreatedAt is when the ClusterVersion was created, if known.
	CreatedAt *time.Time `json:"createdAt,omitempty"`
}

// Etcd describes the member the snapshot was taken from, and the snapshot.
type Etcd struct {
	MemberName     string `json:"memberName"`
	MemberID       string `json:"memberID"`
	Endpoint       string `json:"endpoint"`
	ServerVersion  string `json:"serverVersion"`
	StorageVersion string `json:"storageVersion,omitempty"`
	ClusterID      string `json:"clusterID"`
	RaftIndex      uint64 `json:"raftIndex"`
	RaftTerm       uint64 `json:"raftTerm"`
	Revision       int64  `json:"revision"`
	KeyCount       int64  `json:"keyCount"`
	// DBSize is the member's reported backend size when the snapshot started.
	DBSize int64 `json:"dbSize"`
	// SnapshotSHA256 is the hex digest carried in the snapshot's trailer.
	SnapshotSHA256 string `json:"snapshotSHA256"`
}

// StaticPod is the running revision of one static pod component.
type StaticPod struct {
	Component string `json:"component"`
	Revision  int    `json:"revision"`
}

// CertExpiry names a certificate and when it expires.
type CertExpiry struct {
	Path     string    `json:"path"`
	NotAfter time.Time `json:"notAfter"`
}

// File describes one file of the backup.
type File struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Size   int64  `json:"size"`
	Mode   string `json:"mode"`
	SHA256 string `json:"sha256"`
	CRC32C uint32 `json:"crc32c"`
	// Stored describes the bytes at a destination when they are not the
	// file's own (encrypted); nil when they are.
	Stored *Stored `json:"stored,omitempty"`
}

// Stored is what a destination holds of a file that is stored transformed:
// its bytes' size and checksums, besides the plaintext ones in File, so
// that the stored bytes can be checked without a key.
type Stored struct {
	// Encryption is "age": the object is one age file.
	Encryption string `json:"encryption"`
	// Recipients are the public keys it is encrypted to.
	Recipients []string `json:"recipients"`
	Size       int64    `json:"size"`
	// SHA256 is recorded where the destination addresses blobs by it (a
	// registry); a CRC32C alone checks an object in Cloud Storage, and
	// age authenticates the content.
	SHA256 string `json:"sha256,omitempty"`
	CRC32C uint32 `json:"crc32c"`
}

// Content is the file as it sits at a destination: the stored bytes'
// size and checksums under the file's name.
func (f File) Content() File {
	if f.Stored == nil {
		return f
	}
	return File{Name: f.Name, Kind: f.Kind, Size: f.Stored.Size, Mode: f.Mode, SHA256: f.Stored.SHA256, CRC32C: f.Stored.CRC32C}
}

// Encrypted says whether any file is stored encrypted.
func (b *Backup) Encrypted() bool {
	return slices.ContainsFunc(b.Files, func(f File) bool { return f.Stored != nil })
}

// ClusterKey names the cluster in destination paths: the OpenShift cluster
// ID, else the etcd cluster ID.
func (b *Backup) ClusterKey() string {
	if b.Cluster.ID != "" {
		return b.Cluster.ID
	}
	return b.Etcd.ClusterID
}

// File returns the file of the given kind, or nil.
func (b *Backup) File(kind string) *File {
	for i := range b.Files {
		if b.Files[i].Kind == kind {
			return &b.Files[i]
		}
	}
	return nil
}

// Size is the total size of the backup's files.
func (b *Backup) Size() int64 {
	var n int64
	for _, f := range b.Files {
		n += f.Size
	}
	return n
}

// SnapshotName returns the snapshot file name for ts, as cluster-backup.sh names it.
func SnapshotName(ts string, dirty bool) string {
	return "snapshot_" + ts + suffix(dirty) + ".db"
}

// ResourcesName returns the static resources archive name for ts.
func ResourcesName(ts string, dirty bool) string {
	return "static_kuberesources_" + ts + suffix(dirty) + ".tar.gz"
}

func suffix(dirty bool) string {
	if dirty {
		return DirtySuffix
	}
	return ""
}

func validStored(version int, f File) error {
	s := f.Stored
	switch {
	case version < SchemaStored:
		return fmt.Errorf("file %q has stored bytes of its own, which schemaVersion %d cannot describe", f.Name, version)
	case s.Encryption != "age":
		return fmt.Errorf("file %q is stored with encryption %q, which this build cannot read (it reads age)", f.Name, s.Encryption)
	case len(s.Recipients) == 0:
		return fmt.Errorf("file %q is stored encrypted to no recipient", f.Name)
	case s.Size < 0 || (s.SHA256 != "" && !hexSHA256.MatchString(s.SHA256)):
		return fmt.Errorf("file %q has a malformed stored size or sha256", f.Name)
	}
	return nil
}

// Marshal encodes b as indented JSON with a trailing newline.
func Marshal(b *Backup) ([]byte, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", FileName, err)
	}
	return append(out, '\n'), nil
}

// ErrInvalid is what Parse's errors match when it read a manifest whole and
// it is not a valid one, as against one that could not be read.
var ErrInvalid = errors.New("not a valid " + FileName)

// invalid marks err as ErrInvalid and reads as err.
type invalid struct{ error }

func (e invalid) Is(target error) bool { return target == ErrInvalid }
func (e invalid) Unwrap() error        { return e.error }

// Parse reads and validates a manifest. Unknown fields are allowed so that a
// newer minor writer stays readable; a newer schema version is not.
func Parse(r io.Reader) (*Backup, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", FileName, err)
	}
	if len(data) > maxManifestSize {
		return nil, invalid{fmt.Errorf("%s is larger than %d bytes", FileName, maxManifestSize)}
	}
	var b Backup
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, invalid{fmt.Errorf("decode %s: %w", FileName, err)}
	}
	if err := b.Validate(); err != nil {
		return nil, invalid{err}
	}
	return &b, nil
}

var (
	hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	octalMode = regexp.MustCompile(`^0[0-7]{3}$`)
)

// Validate checks what readers rely on: a known schema, a well-formed
// timestamp, and exactly one snapshot and one archive whose names are plain
// file names matching the timestamp, so no name can point outside a directory.
func (b *Backup) Validate() error {
	var errs []error
	if b.SchemaVersion < 1 || b.SchemaVersion > SchemaVersion {
		errs = append(errs, fmt.Errorf("schemaVersion %d is not supported (this build reads 1 to %d)", b.SchemaVersion, SchemaVersion))
	}
	if _, err := time.Parse(TimestampLayout, b.Timestamp); err != nil {
		errs = append(errs, fmt.Errorf("timestamp %q is not %s", b.Timestamp, TimestampLayout))
	}
	want := map[string]string{
		KindSnapshot:  SnapshotName(b.Timestamp, b.Dirty),
		KindResources: ResourcesName(b.Timestamp, b.Dirty),
	}
	seen := map[string]bool{}
	for _, f := range b.Files {
		if seen[f.Kind] {
			errs = append(errs, fmt.Errorf("file kind %q listed twice", f.Kind))
			continue
		}
		seen[f.Kind] = true
		name, ok := want[f.Kind]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("file %q has unknown kind %q", f.Name, f.Kind))
		case f.Name != name || path.Base(f.Name) != f.Name || strings.ContainsAny(f.Name, `/\`):
			errs = append(errs, fmt.Errorf("%s file is named %q, want %q", f.Kind, f.Name, name))
		}
		if f.Size < 0 {
			errs = append(errs, fmt.Errorf("file %q has negative size", f.Name))
		}
		if !hexSHA256.MatchString(f.SHA256) {
			errs = append(errs, fmt.Errorf("file %q has malformed sha256 %q", f.Name, f.SHA256))
		}
		if !octalMode.MatchString(f.Mode) {
			errs = append(errs, fmt.Errorf("file %q has malformed mode %q", f.Name, f.Mode))
		}
		if f.Stored != nil {
			errs = append(errs, validStored(b.SchemaVersion, f))
		}
	}
	for kind := range want {
		if !seen[kind] {
			errs = append(errs, fmt.Errorf("no %s file listed", kind))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid %s: %w", FileName, err)
	}
	return nil
}

// SameBackup says whether a and b describe the same backup, stored the
// same way: the same files with the same content and, for files stored
// encrypted, the same recipients. The stored bytes' checksums are not
// compared: each encryption makes new ones.
func SameBackup(a, b *Backup) bool {
	return a.Timestamp == b.Timestamp && slices.EqualFunc(a.Files, b.Files, func(x, y File) bool {
		if x.Name != y.Name || x.Kind != y.Kind || x.Size != y.Size || x.SHA256 != y.SHA256 || (x.Stored == nil) != (y.Stored == nil) {
			return false
		}
		if x.Stored == nil {
			return true
		}
		rx, ry := slices.Clone(x.Stored.Recipients), slices.Clone(y.Stored.Recipients)
		slices.Sort(rx)
		slices.Sort(ry)
		return x.Stored.Encryption == y.Stored.Encryption && slices.Equal(rx, ry)
	})
}

// Plain is b as a backup directory holds it once its files are decrypted:
// no stored records, and the schema version older builds read.
func (b *Backup) Plain() *Backup {
	p := *b
	p.Files = slices.Clone(b.Files)
	for i := range p.Files {
		p.Files[i].Stored = nil
	}
	p.Locations = nil
	p.SchemaVersion = SchemaPlain
	return &p
}

// Recipients are the public keys the backup's files are encrypted to.
func (b *Backup) Recipients() []string {
	var keys []string
	for _, f := range b.Files {
		if f.Stored != nil {
			for _, k := range f.Stored.Recipients {
				if !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
			}
		}
	}
	return keys
}
