// Package store names what the remote backup logic needs from an object
// store, independent of the service behind it: gs:// URLs, object attributes,
// the options of a create-only write, and the errors callers branch on.
// Implementations live in subpackages (store/gcs).
package store

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Scheme is the URL scheme of Google Cloud Storage destinations.
const Scheme = "gs"

// Errors an implementation returns, wrapped, so that callers can branch with errors.Is.
var (
	// ErrNotExist: the object does not exist.
	ErrNotExist = errors.New("does not exist")
	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("bucket does not exist")
	// ErrStalled: the service stopped answering, or stopped taking or
	// sending data, for the stall timeout.
	ErrStalled = errors.New("transfer stalled")
	// ErrExist: a create-only write found the name taken.
	ErrExist = errors.New("already exists")
	// ErrChanged: a conditional request found a different generation.
	ErrChanged = errors.New("changed since it was read")
	// ErrCorrupt: what was read does not match the checksum the service
	// holds for the object.
	ErrCorrupt = errors.New("content does not match its stored checksum")
	// ErrPermission: the service refused the request (403), for instance
	// because the object is under a retention policy or hold, or the
	// credentials lack a role.
	ErrPermission = errors.New("permission denied")
)

// Object describes a stored object.
type Object struct {
	Name       string
	Size       int64
	CRC32C     uint32
	Generation int64
	Created    time.Time
	Metadata   map[string]string
	// Hold is set when an event-based or temporary hold forbids deletion.
	Hold bool
	// RetainUntil is when a bucket retention policy or the object's own
	// retention stops forbidding deletion; zero when neither applies.
	RetainUntil time.Time
}

// Protected says why obj cannot be deleted at now, or "" if it can.
func (o *Object) Protected(now time.Time) string {
	switch {
	case o.Hold:
		return "under a hold"
	case now.Before(o.RetainUntil):
		return "retained until " + o.RetainUntil.UTC().Format(time.RFC3339)
	}
	return ""
}

// PutOptions describe an object being created.
type PutOptions struct {
	// Size is the number of bytes the reader yields; it sizes upload
	// buffers. A negative Size means the content is not known before it is
	// sent (it is encrypted as it goes): CRC32C is then not used, and the
	// caller compares what the service reports with what it sent.
	Size int64
	// CRC32C (Castagnoli) of the content, sent with it so that the service
	// rejects corrupted data, and compared with what the service stored.
	CRC32C      uint32
	ContentType string
	Metadata    map[string]string
	// KMSKey names a Cloud KMS key to encrypt the object with (CMEK); empty
	// means the bucket's default encryption.
	KMSKey string
}

// URL is a gs://bucket/path location: a prefix or one object.
type URL struct {
	Bucket string
	// Path has no leading or trailing slash; empty means the bucket's root.
	Path string
}

// Bucket names: 3 to 63 characters (222 with dots), lowercase letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit. The
// length is checked apart: a bounded repetition compiles into a copy per
// count, which every command would pay for at start-up.
var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*[a-z0-9]$`)

// ParseURL parses gs://bucket[/path]. A trailing slash is allowed; empty,
// "." and ".." path segments are not, so that a path always names the same
// objects however it is joined.
func ParseURL(s string) (URL, error) {
	rest, ok := strings.CutPrefix(s, Scheme+"://")
	if !ok {
		return URL{}, fmt.Errorf("%q is not a %s:// URL (want gs://bucket/prefix)", s, Scheme)
	}
	bucket, p, _ := strings.Cut(rest, "/")
	if len(bucket) < 3 || len(bucket) > 222 || !bucketName.MatchString(bucket) || (len(bucket) > 63 && !strings.Contains(bucket, ".")) {
		return URL{}, fmt.Errorf("%q: %q is not a valid bucket name", s, bucket)
	}
	p = strings.TrimSuffix(p, "/")
	if p != "" {
		for seg := range strings.SplitSeq(p, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return URL{}, fmt.Errorf("%q: the path has an empty, '.' or '..' segment", s)
			}
		}
	}
	return URL{Bucket: bucket, Path: p}, nil
}

// Join returns u with elem appended to its path, each a single segment.
func (u URL) Join(elem ...string) URL {
	parts := make([]string, 0, len(elem)+1)
	if u.Path != "" {
		parts = append(parts, u.Path)
	}
	u.Path = strings.Join(append(parts, elem...), "/")
	return u
}

// Dir is the listing prefix of the objects below u: its path and a slash,
// or "" at the bucket's root.
func (u URL) Dir() string {
	if u.Path == "" {
		return ""
	}
	return u.Path + "/"
}

func (u URL) String() string {
	if u.Path == "" {
		return Scheme + "://" + u.Bucket
	}
	return Scheme + "://" + u.Bucket + "/" + u.Path
}
