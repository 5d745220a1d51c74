// Package encryption encrypts the files of a backup to age recipients as
// they stream to a destination, and decrypts them with an identity as they
// stream back. The cluster and the pipeline hold only public keys: nothing
// they hold can decrypt a backup.
package encryption

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"filippo.io/age/armor"
	"golang.org/x/crypto/ssh"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/smallfile"
)

// Format names the encryption in backup.json: every stored object is one
// age file (age-encryption.org/v1).
const Format = "age"

// maxKeyFile bounds what is read of a recipients or identity file: they
// hold a few keys, never megabytes.
const maxKeyFile = 1 << 20

// Recipients are the public keys a backup is encrypted to.
type Recipients struct {
	list []age.Recipient
	keys []string
}

// ParseRecipients parses public keys given one by one (--encrypt-to) and
// files of them, one a line with # comments, as age -R reads them. Accepted
// are age X25519 keys (age1...), age hybrid post-quantum keys (age1pq1...),
// and SSH ed25519 and RSA public keys. It returns nil when there are none.
func ParseRecipients(keys, files []string) (*Recipients, error) {
	rs := &Recipients{}
	for _, k := range keys {
		if err := rs.add(k); err != nil {
			if fi, serr := os.Stat(k); serr == nil && fi.Mode().IsRegular() {
				// A path, not key material: it may be quoted.
				return nil, usage(fmt.Errorf("--encrypt-to: %s is a file: give it with --encrypt-to-file", k))
			}
			return nil, usage(fmt.Errorf("--encrypt-to: %w", err))
		}
	}
	for _, f := range files {
		if err := rs.addFile(f); err != nil {
			return nil, usage(err)
		}
	}
	if len(rs.list) == 0 {
		return nil, nil
	}
	return rs, nil
}

func (rs *Recipients) addFile(path string) error {
	data, err := readKeyFile("recipients file", path)
	if err != nil {
		return err
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxKeyFile)
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := rs.add(line); err != nil {
			return fmt.Errorf("recipients file %s, line %d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read recipients file %s: %w", path, err)
	}
	if n == 0 || len(rs.list) == 0 {
		return fmt.Errorf("recipients file %s holds no recipient", path)
	}
	return nil
}

// plugin returns the name of the age plugin that key is a recipient of, or
// "". Such keys are Bech32 whose human-readable part is "age1" and the name
// (age1yubikey1...), where an X25519 key's is "age"; Bech32's data part
// holds no "1".
func plugin(key string) string {
	hrp := strings.ToLower(key[:max(strings.LastIndexByte(key, '1'), 0)])
	if !strings.HasPrefix(hrp, "age1") {
		return ""
	}
	return strings.TrimPrefix(hrp, "age1")
}

// pluginOf names what holds the private key of a plugin's recipient.
func pluginOf(name string) string {
	if name == "tag" || name == "tagpq" {
		// age's own tagged recipients, for keys on hardware tokens.
		return "a key on a hardware token"
	}
	return "age-plugin-" + name
}

// add parses one public key. Its errors never quote the key: a private key
// given by mistake must not reach a log.
func (rs *Recipients) add(key string) error {
	key = strings.TrimSpace(key)
	var (
		r   age.Recipient
		err error
	)
	switch {
	case strings.HasPrefix(key, "AGE-SECRET-KEY-"), strings.Contains(key, "PRIVATE KEY"):
		return errors.New("that is a private key; give its public key (age-keygen -y FILE, or the .pub of an SSH key), and keep the private key off the cluster")
	case strings.HasPrefix(key, "age1pq1"):
		r, err = age.ParseHybridRecipient(key)
	case plugin(key) != "":
		return fmt.Errorf("%.20s... is a recipient whose private key only an age plugin can use (%s), and this tool runs none, so it could not decrypt the backup: give an age public key from age-keygen, or an SSH public key, and keep its private key off the cluster", key, pluginOf(plugin(key)))
	case strings.HasPrefix(key, "age1"):
		r, err = age.ParseX25519Recipient(key)
	case strings.HasPrefix(key, "ssh-ed25519 "), strings.HasPrefix(key, "ssh-rsa "):
		r, err = agessh.ParseRecipient(key)
		key = canonicalSSH(key)
	default:
		return errors.New("not an age public key (age1...) or an SSH public key (ssh-ed25519, ssh-rsa)")
	}
	if err != nil {
		return fmt.Errorf("malformed public key %.20s...: %w", key, err)
	}
	rs.list = append(rs.list, r)
	rs.keys = append(rs.keys, key)
	return nil
}

// canonicalSSH drops an SSH key's comment, which often names a person or a
// host, from what backup.json records.
func canonicalSSH(key string) string {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
	if err != nil {
		return key
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}

// Keys are the public keys, as backup.json records them.
func (rs *Recipients) Keys() []string { return slices.Clone(rs.keys) }

// Encrypt returns a reader of src encrypted to the recipients: one age
// file, produced as src is read, with a new file key each call.
func (rs *Recipients) Encrypt(src io.Reader) (io.Reader, error) {
	r, err := age.EncryptReader(src, rs.list...)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return &filling{r: r}, nil
}

// filling fills each read as far as it can. age's reader hands out one 64
// KiB chunk a read, and a destination that passes each read to another
// goroutine (the Cloud Storage writer does) would pay a hand-off per chunk
// instead of one per large read: measured, that cost more CPU than the
// encryption itself.
type filling struct{ r io.Reader }

func (f *filling) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := f.r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Identity is what decrypts: the private keys of one identity file.
type Identity struct {
	path string
	ids  []age.Identity
}

// Passphrase asks for the passphrase of the identity file at path.
type Passphrase func(path string) ([]byte, error)

// ReadIdentity reads an age identity file (AGE-SECRET-KEY-1... lines, as
// age-keygen writes), one protected by a passphrase (age -p, armored or
// not), or an SSH private key (ed25519 or RSA); a passphrase it asks for
// with ask. Its errors never quote the file's content.
func ReadIdentity(path string, ask Passphrase) (*Identity, error) {
	data, err := readKeyFile("identity file", path)
	if err != nil {
		return nil, usage(err)
	}
	if protected(data) {
		if data, err = unlock(path, data, ask); err != nil {
			return nil, usage(err)
		}
	}
	var ids []age.Identity
	if bytes.Contains(data, []byte("-----BEGIN")) {
		id, err := agessh.ParseIdentity(data)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			id, err = unlockSSH(path, data, ask)
			if err != nil {
				return nil, usage(err)
			}
		}
		if err != nil {
			return nil, usage(fmt.Errorf("identity %s is not a usable SSH private key (ed25519 or RSA): %v", path, err))
		}
		ids = []age.Identity{id}
	} else {
		ids, err = age.ParseIdentities(bytes.NewReader(data))
		if err != nil && bytes.Contains(data, []byte("AGE-PLUGIN-")) {
			return nil, usage(fmt.Errorf("identity %s is an age plugin's (a key on a hardware token), and this tool runs no plugin: give an age identity file (age-keygen) or an SSH private key", path))
		}
		if err != nil && publicKeys(data) {
			return nil, usage(fmt.Errorf("identity %s holds public keys, as a recipients file does: give the private key whose public key the backup was encrypted to (the file age-keygen wrote, AGE-SECRET-KEY-1..., or the SSH private key)", path))
		}
		if err != nil {
			return nil, usage(fmt.Errorf("identity %s: %v (want an age identity file, as age-keygen writes, or an SSH private key)", path, err))
		}
	}
	return &Identity{path: path, ids: ids}, nil
}

// publicKeys reports whether data, which holds no identity, has a line
// that is a public key: a recipients file, or an SSH key's .pub.
func publicKeys(data []byte) bool {
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "age1") || strings.HasPrefix(line, "ssh-ed25519 ") || strings.HasPrefix(line, "ssh-rsa ") {
			return true
		}
	}
	return false
}

// unlockSSH reads an SSH private key protected by a passphrase, as age -d
// -i does, asking for its passphrase with ask.
func unlockSSH(path string, data []byte, ask Passphrase) (age.Identity, error) {
	if ask == nil {
		return nil, fmt.Errorf("identity %s is a passphrase-protected SSH key, whose passphrase cannot be asked for here: use an age identity (age-keygen), or a copy of the key without a passphrase kept off the cluster", path)
	}
	pass, err := ask(path)
	if err != nil {
		return nil, fmt.Errorf("identity %s is a passphrase-protected SSH key, whose passphrase could not be asked for (%v): run where there is a terminal", path, err)
	}
	key, err := ssh.ParseRawPrivateKeyWithPassphrase(data, pass)
	if errors.Is(err, x509.IncorrectPasswordError) {
		return nil, fmt.Errorf("identity %s: wrong passphrase", path)
	}
	if err != nil {
		return nil, fmt.Errorf("identity %s is not a usable SSH private key (ed25519 or RSA): %v", path, err)
	}
	switch k := key.(type) {
	case *ed25519.PrivateKey:
		return agessh.NewEd25519Identity(*k)
	case *rsa.PrivateKey:
		return agessh.NewRSAIdentity(k)
	}
	return nil, fmt.Errorf("identity %s is a %T SSH key: use an ed25519 or RSA one", path, key)
}

// ageHeader opens every age file that is not armored.
const ageHeader = "age-encryption.org/v1\n"

// protected says whether an identity file is itself an age file: one
// that age -p encrypted with a passphrase.
func protected(data []byte) bool {
	return bytes.HasPrefix(data, []byte(ageHeader)) || bytes.HasPrefix(bytes.TrimSpace(data), []byte(armor.Header))
}

// unlock decrypts a passphrase-protected identity file, as age -d -i
// does, asking for its passphrase with ask.
func unlock(path string, data []byte, ask Passphrase) ([]byte, error) {
	if ask == nil {
		return nil, fmt.Errorf("identity %s is protected by a passphrase, which cannot be asked for here: decrypt it with age -d into memory (/dev/shm) and give that", path)
	}
	pass, err := ask(path)
	if err != nil {
		return nil, fmt.Errorf("identity %s is protected by a passphrase, which could not be asked for (%v): run where there is a terminal, or decrypt it with age -d into memory (/dev/shm) and give that", path, err)
	}
	id, err := age.NewScryptIdentity(string(pass))
	if err != nil {
		return nil, fmt.Errorf("identity %s: %v", path, err)
	}
	var src io.Reader = bytes.NewReader(data)
	if !bytes.HasPrefix(data, []byte(ageHeader)) {
		src = armor.NewReader(bytes.NewReader(bytes.TrimSpace(data)))
	}
	r, err := age.Decrypt(src, id)
	if err != nil {
		return nil, fmt.Errorf("identity %s: wrong passphrase, or not a passphrase-protected file (%v)", path, err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, maxKeyFile+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("identity %s: %v", path, err)
	case len(plain) > maxKeyFile:
		return nil, fmt.Errorf("identity %s holds more than %d bytes: not a key file", path, maxKeyFile)
	}
	return plain, nil
}

// ErrNoIdentity: none of an identity's keys can decrypt a file.
var ErrNoIdentity = errors.New("cannot decrypt with this identity")

// Decrypt returns a reader of the plaintext of the age file src. The age
// format authenticates every 64 KiB chunk: a changed byte fails the Read
// that reaches it, and a cut file fails at its end. recipients are those the
// file was encrypted to, named when the identity does not match them.
func (id *Identity) Decrypt(src io.Reader, recipients []string) (io.Reader, error) {
	r, err := age.Decrypt(src, id.ids...)
	var nomatch *age.NoIdentityMatchError
	switch {
	case errors.As(err, &nomatch):
		return nil, usage(fmt.Errorf("%w: %s holds no key for any of the recipients the backup was encrypted to (%s)", ErrNoIdentity, id.path, strings.Join(recipients, ", ")))
	case err != nil:
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return r, nil
}

// readKeyFile reads the file of keys at path; kind says which it is, since
// a command may take several (--encrypt-to-file, --identity).
func readKeyFile(kind, path string) ([]byte, error) {
	data, err := smallfile.Read(path, maxKeyFile)
	var pe *fs.PathError
	switch {
	case errors.Is(err, smallfile.ErrTooLarge):
		return nil, fmt.Errorf("%s %s is larger than %d bytes: not a key file", kind, path, maxKeyFile)
	case errors.As(err, &pe):
		return nil, fmt.Errorf("%s %s: %w", kind, path, pe.Err)
	case err != nil:
		return nil, err
	}
	// Windows editors and shells mark the text they write: a UTF-8 mark
	// goes, UTF-16 (Windows PowerShell's Out-File) cannot be read as keys.
	if bytes.HasPrefix(data, []byte{0xff, 0xfe}) || bytes.HasPrefix(data, []byte{0xfe, 0xff}) {
		return nil, fmt.Errorf("%s is UTF-16 text, as Windows PowerShell's Out-File writes: save it as UTF-8 or ASCII (Set-Content, or Out-File -Encoding ascii)", path)
	}
	return bytes.TrimPrefix(data, []byte("\ufeff")), nil
}

func usage(err error) error { return exitcode.With(exitcode.Usage, err) }

// ErrStoredMismatch: the stored bytes of a file are not those backup.json
// records.
var ErrStoredMismatch = errors.New("stored bytes do not match backup.json")

// Unseal returns a reader of the plaintext of f, read from its stored
// bytes. The stored bytes are checked against backup.json as they pass
// (ErrStoredMismatch at their end), and age authenticates each chunk; the
// caller checks the plaintext against f as usual.
func (id *Identity) Unseal(stored io.Reader, f manifest.File) (io.Reader, error) {
	if f.Stored == nil {
		return nil, fmt.Errorf("%s is not stored encrypted", f.Name)
	}
	// A failed decryption is told apart from a failed read; an identity
	// that does not match keeps its exit 2.
	src := exitcode.NewSource(CheckStored(stored, f))
	plain, err := id.Decrypt(src, f.Stored.Recipients)
	if err != nil {
		return nil, src.Blame(fmt.Errorf("%s: %w", f.Name, err))
	}
	return &plainReader{r: plain, src: src, name: f.Name}, nil
}

// plainReader is the decrypted stream: age authenticates each chunk, so
// changed or cut stored bytes fail the read that reaches them.
type plainReader struct {
	r    io.Reader
	src  *exitcode.Source
	name string
}

func (p *plainReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err != nil && err != io.EOF {
		err = p.src.Blame(fmt.Errorf("decrypt %s: %w", p.name, err))
	}
	return n, err
}

// CheckStored passes the stored bytes of f through and fails at their end
// (ErrStoredMismatch) unless they are what backup.json records: what
// verify can check of an encrypted file without a key.
func CheckStored(stored io.Reader, f manifest.File) io.Reader {
	want := f.Content()
	digest := manifest.NewDigest()
	if want.SHA256 == "" {
		// Cloud Storage records no SHA-256 of the stored bytes: no need
		// to compute one.
		digest = manifest.NewChecksum()
	}
	return &storedReader{r: stored, want: want, digest: digest}
}

type storedReader struct {
	r      io.Reader
	want   manifest.File
	digest *manifest.Digest
}

func (s *storedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.digest.Write(p[:n])
	if err == io.EOF {
		if merr := s.digest.Check(s.want); merr != nil {
			return n, exitcode.With(exitcode.Verify, fmt.Errorf("%w: %w", ErrStoredMismatch, merr))
		}
	}
	return n, err
}

// Plan returns b as it is to be stored encrypted to the recipients: each
// file marked for encryption, its stored record to be filled in as it is
// sent, and the schema version that describes stored records.
func (rs *Recipients) Plan(b *manifest.Backup) *manifest.Backup {
	p := *b
	p.SchemaVersion = manifest.SchemaStored
	p.Files = slices.Clone(b.Files)
	for i := range p.Files {
		p.Files[i].Stored = &manifest.Stored{Encryption: Format, Recipients: rs.Keys()}
	}
	return &p
}
