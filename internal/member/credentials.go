package member

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/smallfile"
)

// ErrCredentials marks a CA bundle, client certificate or key that cannot
// work with the member, found before dialling or refused by it in the TLS
// handshake. Retrying, or skipping the preflight checks, does not help: the
// configuration must change.
var ErrCredentials = errors.New("etcd TLS credentials do not work")

// credentialsError keeps its message free of the ErrCredentials text while
// errors.Is still finds it.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string        { return e.err.Error() }
func (e *credentialsError) Unwrap() error        { return e.err }
func (e *credentialsError) Is(target error) bool { return target == ErrCredentials }

func credentialsErr(format string, a ...any) error {
	return &credentialsError{fmt.Errorf(format, a...)}
}

// dateLayout is how certificate dates appear in messages.
const dateLayout = time.RFC3339

// checkCredentials proves, without contacting the member, that the client
// certificate is valid at now, matches its key and chains to the CA bundle.
// On OpenShift and kubeadm the CA that signs etcd's serving certificate also
// signs its client certificates, and the member trusts only that CA, so a
// certificate that does not chain to the bundle would be refused.
func checkCredentials(cfg Config, now time.Time) error {
	roots, rootSubjects, err := readCABundle(cfg.CACert)
	if err != nil {
		return err
	}
	certPEM, err := readPEM(pemClientCert, cfg.Cert)
	if err != nil {
		return err
	}
	keyPEM, err := readPEM(pemClientKey, cfg.Key)
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	switch {
	case err != nil && strings.Contains(err.Error(), "does not match"):
		return credentialsErr("client key %s does not belong to client certificate %s: give the key issued with it", cfg.Key, cfg.Cert)
	case err != nil:
		return credentialsErr("client certificate %s with key %s: %w", cfg.Cert, cfg.Key, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return credentialsErr("client certificate %s: %w", cfg.Cert, err)
	}
	switch {
	case now.After(leaf.NotAfter):
		return credentialsErr("client certificate %s expired on %s: give a current certificate and key (--cert, --key)", cfg.Cert, leaf.NotAfter.UTC().Format(dateLayout))
	case now.Before(leaf.NotBefore):
		return credentialsErr("client certificate %s is not valid until %s, and this node's clock says %s: check the clock, or give a current certificate and key (--cert, --key)",
			cfg.Cert, leaf.NotBefore.UTC().Format(dateLayout), now.UTC().Format(dateLayout))
	}
	intermediates := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			intermediates.AddCert(c)
		}
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &unknown):
		return credentialsErr("client certificate %s, issued by %q, does not chain to the CA in %s (%s), which etcd trusts: give a certificate and key that CA issued, or the bundle that holds its issuer (--cacert)",
			cfg.Cert, leaf.Issuer.String(), cfg.CACert, strings.Join(rootSubjects, "; "))
	case err != nil:
		return credentialsErr("client certificate %s does not verify against %s: %w", cfg.Cert, cfg.CACert, err)
	}
	return nil
}

// readCABundle returns the certificates of a PEM bundle and their subjects.
func readCABundle(path string) (*x509.CertPool, []string, error) {
	data, err := readPEM(pemCABundle, path)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	var subjects []string
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, credentialsErr("CA bundle %s: %w", path, err)
		}
		pool.AddCert(c)
		subjects = append(subjects, c.Subject.String())
	}
	if len(subjects) == 0 {
		return nil, nil, credentialsErr("CA bundle %s holds no PEM certificate", path)
	}
	return pool, subjects, nil
}

// pemFile is one of the files the member is dialled with.
type pemFile struct {
	what, flag string
	// keys are the names a mounted Secret or ConfigMap gives the file:
	// kubernetes.io/tls, cert-manager's ca.crt, OpenShift's CA bundles.
	keys []string
}

var (
	pemCABundle   = pemFile{"CA bundle", "--cacert", []string{"ca.crt", "ca-bundle.crt"}}
	pemClientCert = pemFile{"client certificate", "--cert", []string{"tls.crt"}}
	pemClientKey  = pemFile{"client key", "--key", []string{"tls.key"}}
)

// maxPEM bounds what is read of a CA bundle, certificate or key: a system
// bundle is a few hundred KiB, and a path mistyped to a snapshot must not
// be read whole.
const maxPEM = 4 << 20

// readPEM reads the file f at path. A directory, as a Secret mounted
// whole, names the file in it to give.
func readPEM(f pemFile, path string) ([]byte, error) {
	data, err := smallfile.Read(path, maxPEM)
	var dir smallfile.DirError
	switch {
	case errors.Is(err, smallfile.ErrTooLarge):
		return nil, credentialsErr("%s %s is larger than %d MiB, as no PEM file is: give the %s (%s)", f.what, path, maxPEM>>20, f.what, f.flag)
	case errors.As(err, &dir) && dir.File == "":
		for _, key := range f.keys {
			if fi, serr := os.Stat(filepath.Join(path, key)); serr == nil && fi.Mode().IsRegular() {
				return nil, credentialsErr("%s %s is a directory: give the file in it, %s (%s)", f.what, path, filepath.Join(path, key), f.flag)
			}
		}
	}
	if err != nil {
		return nil, credentialsErr("read %s: %w", f.what, err)
	}
	return data, nil
}
