// Package archive writes and checks static_kuberesources_<ts>.tar.gz, the
// archive of the control plane files a restore needs beside the snapshot.
//
// On an OpenShift master it holds the running static pod revisions, members
// named static-pod-resources/<component>-pod-<N>/... relative to
// /etc/kubernetes, which cluster-restore.sh extracts with
// `tar -C /etc/kubernetes -xzf FILE static-pod-resources`. On a kubeadm node
// it holds manifests/... and pki/..., the static pod manifests and the
// certificates kubeadm's documentation says to keep with an etcd backup,
// restored with `tar -C /etc/kubernetes -xzf FILE`. An archive never mixes
// the two layouts.
//
// Members have no "./" prefix, and carry directory entries, modes, numeric
// owners and modification times as on the host. Symbolic links are stored as
// links with their targets unchanged and are never followed, so nothing
// outside the archived directories can end up in the archive. Those
// directories hold only files, directories and symlinks; any other file type
// is an error rather than being silently left out, because a restore from an
// archive missing a file would differ from the host in a way nobody notices.
package archive

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/staticpod"
)

// maxCertFileSize bounds the certificate files whose expiry is read: CA
// bundles are tens of KiB, and larger files are not worth holding in memory.
const maxCertFileSize = 1 << 20

// encryptionConfig is where the kube-apiserver revision keeps the etcd
// encryption keys, relative to its revision directory.
const encryptionConfig = "secrets/encryption-config/encryption-config"

// The top-level directories of a kubeadm node's archive, relative to
// /etc/kubernetes.
const (
	manifestsDir = "manifests"
	pkiDir       = "pki"
)

// Dirs returns the directories to archive, relative to /etc/kubernetes: the
// revision directories of revs, or on a kubeadm node, which has none, the
// manifests and pki directories.
func Dirs(revs []staticpod.Revision) []string {
	if len(revs) == 0 {
		return []string{manifestsDir, pkiDir}
	}
	dirs := make([]string, len(revs))
	for i, r := range revs {
		dirs[i] = r.Dir
	}
	return dirs
}

// Summary describes the content of an archive. Write and Check return the
// same Summary for the same archive, so a verifier can compare them.
type Summary struct {
	Files    int
	Dirs     int
	Symlinks int
	// Bytes is the total size of the regular files.
	Bytes int64
	// EncryptionConfig is set when the archive holds the kube-apiserver
	// encryption config, without which encrypted resources in the snapshot
	// cannot be read after a restore.
	EncryptionConfig bool
	// EarliestCert is the certificate in a .crt or .pem member that expires
	// first, nil if there is none.
	EarliestCert *manifest.CertExpiry
}

// addFile counts a regular file member; data is its content if it is a
// certificate file small enough to inspect, else nil.
func (s *Summary) addFile(name string, size int64, data []byte) {
	s.Files++
	s.Bytes += size
	if isEncryptionConfig(name) {
		s.EncryptionConfig = true
	}
	for rest := data; len(rest) > 0; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		// An unparsable certificate is not this package's to judge: only
		// the expiry of the ones that parse is reported.
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			continue
		}
		if s.EarliestCert == nil || c.NotAfter.Before(s.EarliestCert.NotAfter) {
			s.EarliestCert = &manifest.CertExpiry{Path: name, NotAfter: c.NotAfter.UTC()}
		}
	}
}

// wantsCertScan reports whether a regular file member is inspected for
// certificates.
func wantsCertScan(name string, size int64) bool {
	return size <= maxCertFileSize && (strings.HasSuffix(name, ".crt") || strings.HasSuffix(name, ".pem"))
}

func isEncryptionConfig(name string) bool {
	top, rest, ok := splitTop(name)
	if !ok {
		return false
	}
	c, _, _ := staticpod.ParseRevisionDir(top)
	return c == "kube-apiserver" && rest == encryptionConfig
}

// checkName validates a member name (directories with or without their
// trailing slash) and returns the top-level directory it belongs to.
func checkName(name string) (top string, err error) {
	switch clean := strings.TrimSuffix(name, "/"); {
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("member %q has an absolute path", name)
	case name == "." || strings.HasPrefix(name, "./"):
		return "", fmt.Errorf("member %q has a \"./\" prefix", name)
	case clean == ".." || strings.HasPrefix(clean, "../") || strings.HasSuffix(clean, "/..") || strings.Contains(clean, "/../"):
		return "", fmt.Errorf("member %q has a \"..\" element", name)
	case !fs.ValidPath(clean):
		return "", fmt.Errorf("member %q is not a clean relative UTF-8 path", name)
	}
	top, _, ok := splitTop(strings.TrimSuffix(name, "/"))
	if !ok {
		return "", fmt.Errorf("member %q is not under %s/<component>-pod-<N>/ for one of %s, nor under %s/ or %s/",
			name, staticpod.ResourcesDir, strings.Join(staticpod.Components, ", "), manifestsDir, pkiDir)
	}
	return top, nil
}

// splitTop splits a clean member name into its top-level directory (a
// revision directory, manifests or pki) and the path below it ("" for the
// directory itself).
func splitTop(name string) (top, rest string, ok bool) {
	if first, after, _ := strings.Cut(name, "/"); isKubeadmDir(first) {
		return first, after, true
	}
	parts := strings.SplitN(name, "/", 3)
	if len(parts) < 2 {
		return "", "", false
	}
	top = parts[0] + "/" + parts[1]
	if _, _, ok := staticpod.ParseRevisionDir(top); !ok {
		return "", "", false
	}
	if len(parts) == 3 {
		rest = parts[2]
	}
	return top, rest, true
}

func isKubeadmDir(top string) bool { return top == manifestsDir || top == pkiDir }

// sameLayout reports whether two top-level directories belong to the same
// layout, OpenShift's or kubeadm's.
func sameLayout(a, b string) bool { return isKubeadmDir(a) == isKubeadmDir(b) }

// underSymlink reports whether a parent directory of name is a symlink member.
func underSymlink(name string, symlinks map[string]bool) bool {
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if symlinks[dir] {
			return true
		}
	}
	return false
}

// ctxReader stops a copy promptly once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// errChanged reports a file that changed size while it was archived.
var errChanged = errors.New("file changed while it was archived")
