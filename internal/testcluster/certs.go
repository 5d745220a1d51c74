package testcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"time"
)

// authority is a throwaway certificate authority. ECDSA P-256 keeps key
// generation cheap enough to issue a dozen certificates per cluster.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// certSpec describes one certificate to issue.
type certSpec struct {
	commonName string
	orgs       []string
	ips        []net.IP
	dnsNames   []string
	usages     []x509.ExtKeyUsage
	notBefore  time.Time // default: an hour ago
	notAfter   time.Time
}

// keyPair is a PEM certificate and its PEM private key.
type keyPair struct {
	cert, key []byte
}

func newAuthority(commonName string, notAfter time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName, OrganizationalUnit: []string{"openshift"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate %q: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate %q: %w", commonName, err)
	}
	return &authority{cert: cert, key: key, pem: pemBlock("CERTIFICATE", der)}, nil
}

// keyPEM returns the CA's private key, for layouts (kubeadm) that keep it on the host.
func (a *authority) keyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(a.key)
	if err != nil {
		return nil, fmt.Errorf("marshal CA key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// issue signs a leaf certificate. The serial number is left to
// x509.CreateCertificate, which picks a random RFC 5280 one.
func (a *authority) issue(spec certSpec) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, fmt.Errorf("generate key for %q: %w", spec.commonName, err)
	}
	if spec.notBefore.IsZero() {
		spec.notBefore = time.Now().Add(-time.Hour)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: spec.commonName, Organization: spec.orgs},
		NotBefore:   spec.notBefore,
		NotAfter:    spec.notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: spec.usages,
		IPAddresses: spec.ips,
		DNSNames:    spec.dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return keyPair{}, fmt.Errorf("create certificate %q: %w", spec.commonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return keyPair{}, fmt.Errorf("marshal key for %q: %w", spec.commonName, err)
	}
	return keyPair{cert: pemBlock("CERTIFICATE", der), key: pemBlock("PRIVATE KEY", keyDER)}, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// OpenShift's etcd peer certificates double as etcdctl client certificates,
// so they carry both usages.
func servingUsage() []x509.ExtKeyUsage { return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }
func clientUsage() []x509.ExtKeyUsage  { return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }
func peerClientUsage() []x509.ExtKeyUsage {
	return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
}
