package testcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ClientCert describes a client certificate for IssueClientCert. The zero
// value is one the member accepts, like the host tree's own.
type ClientCert struct {
	Name      string    // file name stem in dir; default "client"
	NotBefore time.Time // default: an hour ago
	NotAfter  time.Time // default: a year from now
	// ForeignCA, when set, has a new CA of that common name sign the
	// certificate instead of the member's CA: one the member does not trust.
	ForeignCA string
}

// ClientCertFiles are the files IssueClientCert wrote.
type ClientCertFiles struct {
	Cert, Key string
	// CA holds the certificate of the CA that signed Cert.
	CA string
}

// IssueClientCert writes a client certificate, its key and its signer's
// certificate into dir, for tests of what a client does with a certificate
// that is expired, not yet valid or issued by a CA the member does not trust.
func (c *Cluster) IssueClientCert(dir string, spec ClientCert) (ClientCertFiles, error) {
	if spec.Name == "" {
		spec.Name = "client"
	}
	if spec.NotAfter.IsZero() {
		spec.NotAfter = time.Now().Add(365 * day)
	}
	ca := c.ca
	if spec.ForeignCA != "" {
		var err error
		if ca, err = newAuthority(spec.ForeignCA, time.Now().Add(365*day)); err != nil {
			return ClientCertFiles{}, err
		}
	}
	kp, err := ca.issue(certSpec{commonName: "etcd-backup-test-" + spec.Name, usages: clientUsage(), notBefore: spec.NotBefore, notAfter: spec.NotAfter})
	if err != nil {
		return ClientCertFiles{}, err
	}
	files := ClientCertFiles{
		Cert: filepath.Join(dir, spec.Name+".crt"),
		Key:  filepath.Join(dir, spec.Name+".key"),
		CA:   filepath.Join(dir, spec.Name+"-ca.crt"),
	}
	for path, data := range map[string][]byte{files.Cert: kp.cert, files.Key: kp.key, files.CA: ca.pem} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return ClientCertFiles{}, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return files, nil
}
