package oci

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/docker/distribution/registry/api/errcode"
	"go.podman.io/image/v5/docker"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/proxy"
	"github.com/etcd-backup/etcd-backup/internal/smallfile"
)

// maxAuthFile bounds an auth file, which holds a few lines per registry.
const maxAuthFile = 1 << 20

// checkAuthFile refuses an auth file that cannot hold credentials: one that
// is missing or unreadable (a Secret mounted elsewhere, a mistyped path),
// over 1 MiB, or not a JSON object. containers/image would read the first
// as no credentials, and the registry's refusal would then hide the cause,
// and the second whole. given names where the path came from. It returns
// the keys of the file's entries (registries, with or without a port, a
// namespace or a scheme), and whether the file is in the legacy form of a
// kubernetes.io/dockercfg Secret's .dockercfg (the type OpenShift makes for
// each service account): entries by host, with no "auths" around them,
// which containers/image reads only when told.
func checkAuthFile(path, given string) (keys []string, legacy bool, err error) {
	if path == "" {
		return nil, false, nil
	}
	data, err := smallfile.Read(path, maxAuthFile)
	if errors.Is(err, smallfile.ErrTooLarge) {
		return nil, false, fmt.Errorf("%s: %s is over %d KiB: not an auth file", given, path, maxAuthFile>>10)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", given, err)
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, false, fmt.Errorf("%s: %s is not a JSON object: give a containers-auth.json, or the .dockerconfigjson of a docker-registry Secret", given, path)
	}
	_, auths := entries["auths"]
	_, helpers := entries["credHelpers"]
	if auths || helpers || len(entries) == 0 {
		// Entries that are not objects fail containers/image's own read,
		// which says so; here they only leave keys out.
		var file struct {
			Auths       map[string]json.RawMessage `json:"auths"`
			CredHelpers map[string]json.RawMessage `json:"credHelpers"`
		}
		json.Unmarshal(data, &file)
		return slices.Concat(slices.Collect(maps.Keys(file.Auths)), slices.Collect(maps.Keys(file.CredHelpers))), false, nil
	}
	for _, raw := range entries {
		var entry struct {
			Auth *string `json:"auth"`
		}
		if json.Unmarshal(raw, &entry) != nil || entry.Auth == nil {
			return nil, false, nil
		}
	}
	return slices.Collect(maps.Keys(entries)), true, nil
}

// covers reports whether one of an auth file's keys applies to host, as
// containers/image looks them up: the host itself (with its port, if it
// has one) or a namespace below it; a key with a scheme (the legacy
// "https://host/v1/") counts by its host alone.
func covers(keys []string, host string) bool {
	return slices.ContainsFunc(keys, func(k string) bool {
		if rest, ok := strings.CutPrefix(k, "https://"); ok {
			k, _, _ = strings.Cut(rest, "/")
		} else if rest, ok := strings.CutPrefix(k, "http://"); ok {
			k, _, _ = strings.Cut(rest, "/")
		}
		return k == host || strings.HasPrefix(k, host+"/")
	})
}

// checkCertDir refuses a --cert-dir that containers/image would pass over
// in silence: one that does not exist or is a file (the CA file, given for
// its directory), a CA file (*.crt) that holds no certificate, a client
// certificate (*.cert) without its key (*.key) or the other way round. The
// registry's refusal would otherwise blame its certificate or the
// credentials.
func checkCertDir(dir string) error {
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if fi, serr := os.Stat(dir); err != nil && serr == nil && fi.Mode().IsRegular() {
		// The CA file itself, given for the directory it is in.
		return fmt.Errorf("--cert-dir: %s is a file: give the directory that holds ca.crt (and client.cert, client.key), as /etc/containers/certs.d/HOST/ does, e.g. %s", dir, filepath.Dir(dir))
	}
	if err != nil {
		return fmt.Errorf("--cert-dir: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch filepath.Ext(e.Name()) {
		case ".crt":
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("--cert-dir: %w", err)
			}
			if !x509.NewCertPool().AppendCertsFromPEM(data) {
				return fmt.Errorf("--cert-dir: %s holds no PEM certificate", path)
			}
		case ".cert", ".key":
			base := strings.TrimSuffix(path, filepath.Ext(path))
			if _, err := tls.LoadX509KeyPair(base+".cert", base+".key"); err != nil {
				return fmt.Errorf("--cert-dir: client certificate %s.cert and key %s.key: %w%s", base, base, err, tlsSecretHint(base))
			}
		}
	}
	return nil
}

// tlsSecretHint says how to mount a kubernetes.io/tls Secret when base.key
// has base.crt beside it and no base.cert: the Secret's tls.crt and
// tls.key, mounted as they are. A *.crt is a CA to trust, in containers'
// certs.d as here; a client certificate is *.cert.
func tlsSecretHint(base string) string {
	_, errCert := os.Stat(base + ".cert")
	_, errCrt := os.Stat(base + ".crt")
	if !errors.Is(errCert, fs.ErrNotExist) || errCrt != nil {
		return ""
	}
	name := filepath.Base(base)
	return fmt.Sprintf(" (%s.crt is read as a CA to trust: a client certificate is named *.cert; mount a kubernetes.io/tls Secret with items %s.crt as client.cert and %s.key as client.key)", name, name, name)
}

// endpoint is where a registry's requests go: its host, "" for a layout,
// whether they may go in plain HTTP (--tls-verify=false), and the auth
// file that holds credentials for it ("--authfile FILE"), if one does.
type endpoint struct {
	host  string
	plain bool
	creds string
}

// settingsError returns err as a usage error (exit 2) that says what to
// give, when the settings cause it (settingsHint); any other error as it
// is. Either way, when err's request failed not at the registry at at but
// at the proxy in its way or at a host the registry sends clients to, it
// says which.
func settingsError(err error, at endpoint) error {
	var said placed
	if exitcode.Of(err) == exitcode.Usage || errors.As(err, &said) {
		// Classified already, with its own hint.
		return err
	}
	hint := settingsHint(err, at)
	where := "" // which host failed, when not the registry
	if via, _ := proxyHint(err, at); via != "" {
		where = via
	} else if host, purpose := detour(err, at.host); host != "" {
		where = detourHint(err, host, purpose, hint)
	}
	switch {
	case where != "" && hint != "":
		return exitcode.With(exitcode.Usage, placed{fmt.Errorf("%w; %s", err, where)})
	case where != "":
		return placed{fmt.Errorf("%w; %s", err, where)}
	case hint != "":
		return exitcode.With(exitcode.Usage, fmt.Errorf("%w; %s", err, hint))
	}
	return err
}

// placed is an error that says which host on the way, other than the
// registry, failed it.
type placed struct{ error }

func (e placed) Unwrap() error { return e.error }

// proxyHint is proxy.Hint of a request to the registry at at, or to a host
// it sent this client on to.
func proxyHint(err error, at endpoint) (string, bool) {
	if at.host == "" {
		return "", false
	}
	asked := &url.URL{Scheme: "https", Host: at.host}
	if at.plain {
		asked.Scheme = "http"
	}
	return proxy.Hint(err, asked, pageStatus(err))
}

// detour returns the host, other than the registry's, that the request
// failing with err went to, and what the registry sends clients there for:
// a token (the realm of its WWW-Authenticate challenge, asked for a scope)
// or, redirected, a blob's bytes. host is "" for the registry's own
// requests, and where registry is "" (a layout).
func detour(err error, registry string) (host, purpose string) {
	var ue *url.Error
	if registry == "" || !errors.As(err, &ue) {
		return "", ""
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil || u.Host == "" || strings.EqualFold(u.Host, registry) {
		return "", ""
	}
	if q := u.Query(); ue.Op == "Post" || q.Has("scope") || q.Has("service") {
		return u.Host, "for a token (its token service)"
	}
	return u.Host, "for a blob's bytes (the storage it serves them from)"
}

// detourHint says what to do about err, which the request to host failed
// with, host being where the registry sends clients purpose. hint is what
// settingsHint says of err, as if the registry had failed it.
func detourHint(err error, host, purpose, hint string) string {
	where := host + ", where the registry sends this client " + purpose
	var dns *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &dns) && dns.IsNotFound:
		return "no DNS name " + dns.Name + " exists here, and the registry sends this client there " + purpose + ": have the registry's administrators name that service by a host name the cluster resolves (Harbor: its external URL), or add the name to the cluster's DNS"
	case errors.As(err, &unknownCA):
		return "no CA trusted here vouches for the certificate of " + where + ": give --cert-dir DIR with that CA in DIR too (every DIR/*.crt is trusted), or --tls-verify=false for a mirror you trust as it is"
	case errors.As(err, &hostname):
		return "the certificate of " + where + ", is not for that host: have the registry's administrators reissue it, or give --tls-verify=false for a mirror you trust as it is"
	case errors.As(err, &invalid):
		return "the certificate of " + where + ", is expired or not yet valid, or this machine's clock is wrong"
	case hint != "":
		return hint
	}
	return where + ", is the host that fails: let this pod reach it as well as the registry (a firewall, egress policy or proxy may let only the registry through), or have the registry's administrators check that service"
}

// settingsHint says what to give when err, of a request to the registry at
// at, comes from settings that no retry can cure: a proxy that refuses the
// request, plain HTTP where TLS is verified, a certificate that no trusted
// CA vouches for, credentials missing or refused, access or room denied, a
// repository that takes no writes, a limit on request bodies smaller than
// a file. It is "" for any other error.
func settingsHint(err error, at endpoint) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var creds docker.ErrUnauthorizedForCredentials
	var dns *net.DNSError
	if err == nil {
		return ""
	}
	if hint, refused := proxyHint(err, at); refused {
		return hint
	}
	switch {
	case errors.As(err, &dns) && dns.IsNotFound:
		// The name server's answer, not a failure to get one.
		return "no DNS name " + dns.Name + " exists: is the registry's host name mistyped? (a pod resolves it through the cluster's DNS)"
	case errors.Is(err, http.ErrSchemeMismatch):
		return "the registry speaks plain HTTP: give --tls-verify=false to reach it without TLS"
	case errors.As(err, &unknownCA):
		return "no CA trusted here vouches for the registry's certificate: give --cert-dir DIR with its CA as DIR/ca.crt (as in /etc/containers/certs.d/HOST), or --tls-verify=false for a mirror you trust as it is"
	case errors.As(err, &hostname) && legacyName(hostname.Certificate):
		return "the registry's certificate names its host only as its Common Name, which Go (and so podman and skopeo) no longer accepts: reissue it with the host in subjectAltName (openssl: -addext subjectAltName=DNS:HOST), or --tls-verify=false for a mirror you trust as it is"
	case errors.As(err, &hostname):
		return "the registry's certificate is not for the host in the URL: name the registry as its certificate does"
	case errors.As(err, &invalid):
		return "the registry's certificate is expired or not yet valid, or this machine's clock is wrong"
	case (errors.As(err, &creds) || isCode(err, errcode.ErrorCodeUnauthorized)) && at.creds != "":
		// A registry with token scopes (Quay, Harbor, OpenShift's)
		// answers a push that the credentials may not make this way too.
		return "the registry refuses the credentials that " + at.creds + " holds for it: they are wrong or expired, or they may pull but not push or delete (an image pull secret, a read-only robot account); give credentials that may push to and pull from the repository"
	case errors.As(err, &creds), isCode(err, errcode.ErrorCodeUnauthorized):
		return "the registry wants credentials and got none it accepts: give --authfile FILE (or $REGISTRY_AUTH_FILE) with an entry for its host, e.g. the .dockerconfigjson of a docker-registry Secret"
	case isCode(err, errcode.ErrorCodeDenied):
		// Quay and Harbor deny a push past a full quota with the same code.
		return "the registry denies the request for the reason it gives: when that is a full quota, prune old backups (the registry frees their room once it collects them) or have the quota raised; otherwise give credentials that may push to and pull from the repository"
	case isCode(err, errcode.ErrorCodeUnsupported), pageStatus(err) == http.StatusMethodNotAllowed:
		// distribution as a pull-through cache answers the first, in
		// read-only maintenance the second; a refused delete says more
		// before it gets here.
		return "the registry takes no writes to this repository: it is a pull-through cache, or read-only for maintenance; give a repository that takes pushes"
	case pageStatus(err) == http.StatusRequestEntityTooLarge:
		return `the registry, or a proxy in front of it, refuses request bodies this large (HTTP 413): raise its limit (nginx: client_max_body_size 0; ingress-nginx: the annotation nginx.ingress.kubernetes.io/proxy-body-size: "0")`
	}
	return ""
}

// legacyName reports whether c names its host only as its Common Name, as
// certificates made with openssl req alone do: no subjectAltName at all.
func legacyName(c *x509.Certificate) bool {
	return c != nil && c.Subject.CommonName != "" &&
		len(c.DNSNames) == 0 && len(c.IPAddresses) == 0 && len(c.EmailAddresses) == 0 && len(c.URIs) == 0
}

// pageStatus returns the HTTP status of a refusal whose body is not a
// registry's error but a page (a proxy's), or 0. containers/image keeps
// that status in an error type it does not export, as a field it does:
// the field is read by name. Were it renamed, such refusals would be
// retried and reported as they are, with the page's title.
func pageStatus(err error) int {
	if err == nil {
		return 0
	}
	v := reflect.ValueOf(err)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() == reflect.Struct && v.Type().PkgPath() == reflect.TypeFor[docker.ErrUnauthorizedForCredentials]().PkgPath() {
		if f := v.FieldByName("StatusCode"); f.CanInt() {
			return int(f.Int())
		}
	}
	switch e := err.(type) {
	case interface{ Unwrap() error }:
		return pageStatus(e.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range e.Unwrap() {
			if s := pageStatus(e); s != 0 {
				return s
			}
		}
	}
	return 0
}
