package desttest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/encryption"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

// Key is a key pair as an administrator keeps it: the public key, given
// to upload, and the identity file, kept off the cluster.
type Key struct {
	Public   string
	Identity string
}

// AgeKey writes a new age X25519 identity file, as age-keygen does.
func AgeKey(t testing.TB) Key {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "age.key")
	if err := os.WriteFile(path, []byte("# created by the test\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Key{Public: id.Recipient().String(), Identity: path}
}

// SSHKey writes a new unencrypted ed25519 SSH private key, as ssh-keygen
// does.
func SSHKey(t testing.TB) Key {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "admin@example")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Public: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " admin@example", Identity: path}
}

// Recipients parses the public keys of keys.
func Recipients(t testing.TB, keys ...Key) *encryption.Recipients {
	t.Helper()
	var pubs []string
	for _, k := range keys {
		pubs = append(pubs, k.Public)
	}
	rs, err := encryption.ParseRecipients(pubs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// Identity reads the identity file of k.
func Identity(t testing.TB, k Key) *encryption.Identity {
	t.Helper()
	id, err := encryption.ReadIdentity(k.Identity, nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func testEncrypted(t *testing.T, h Harness, bs []Backup) {
	d := h.New(t)
	ageKey, sshKey := AgeKey(t), SSHKey(t)
	b := bs[1]
	res, err := destination.UploadDir(t.Context(), d, b.Dir, Recipients(t, ageKey, sshKey))
	if h.OneBlob {
		if exitcode.Of(err) != exitcode.Usage || len(list(t, d)) != 0 {
			t.Errorf("encrypted upload where files are stored together = %v (exit %d), want exit %d and nothing stored", err, exitcode.Of(err), exitcode.Usage)
		}
		return
	}
	if err != nil {
		t.Fatalf("encrypted upload: %v", err)
	}
	entries := list(t, d)
	if len(entries) != 1 || entries[0].State != destination.Complete {
		t.Fatalf("list = %q, want one complete backup", names(entries))
	}
	stored := entries[0].Manifest
	if !stored.Encrypted() || stored.SchemaVersion != manifest.SchemaStored {
		t.Fatalf("stored backup.json (schema %d) does not record encrypted files", stored.SchemaVersion)
	}
	for _, f := range stored.Files {
		if f.SHA256 != b.Manifest.File(f.Kind).SHA256 || f.Stored.SHA256 == f.SHA256 || len(f.Stored.Recipients) != 2 {
			t.Errorf("stored record of %s = %+v, want the plaintext digest, another stored digest and both recipients", f.Name, f.Stored)
		}
	}

	again, err := destination.UploadDir(t.Context(), d, b.Dir, Recipients(t, sshKey, ageKey))
	if err != nil || again.Digest != res.Digest || len(list(t, d)) != 1 {
		t.Errorf("re-run of the encrypted upload = %+v, %v; want the same backup, not sent again", again, err)
	}

	for _, restore := range []bool{false, true} {
		if _, err := destination.Verify(t.Context(), d, res.Name, verify.Options{Log: Log(t), Restore: restore}, nil); err != nil {
			t.Errorf("verify (restore %v) of the stored bytes without a key: %v", restore, err)
		}
	}
	dir := filepath.Join(t.TempDir(), "nokey")
	_, err = destination.Download(t.Context(), d, res.Name, dir, nil)
	if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), ageKey.Public) {
		t.Errorf("download without an identity = %v (exit %d), want exit %d naming the recipients", err, exitcode.Of(err), exitcode.Usage)
	}
	assertAbsent(t, dir)
	dir = filepath.Join(t.TempDir(), "wrongkey")
	_, err = destination.Download(t.Context(), d, res.Name, dir, Identity(t, AgeKey(t)))
	if exitcode.Of(err) != exitcode.Usage || !errors.Is(err, encryption.ErrNoIdentity) {
		t.Errorf("download with the wrong identity = %v (exit %d), want exit %d", err, exitcode.Of(err), exitcode.Usage)
	}
	assertAbsent(t, dir)

	for _, k := range []Key{ageKey, sshKey} {
		dir := filepath.Join(t.TempDir(), "download")
		if _, err := destination.Download(t.Context(), d, res.Name, dir, Identity(t, k)); err != nil {
			t.Fatalf("download with %s: %v", filepath.Base(k.Identity), err)
		}
		sameFiles(t, b.Dir, dir)
		// The plaintext copy is there already: a re-run needs no key.
		if _, err := destination.Download(t.Context(), d, res.Name, dir, nil); !errors.Is(err, destination.ErrDownloaded) {
			t.Errorf("download again, without an identity, into %s = %v, want ErrDownloaded", dir, err)
		}
	}
	if _, err := destination.Verify(t.Context(), d, res.Name, verify.Options{Log: Log(t), Restore: true}, Identity(t, sshKey)); err != nil {
		t.Errorf("verify --restore with the identity: %v", err)
	}
	ageDecrypts(t, d, res.Name, ageKey, b.Dir)
}

// testEncryptedAfterKill: an encrypted upload killed after its files were
// stored and before its commit, so that no clean-up ran, is run again to
// the same keys, as a Task's retry would: it completes, and the backup
// decrypts to the files save wrote.
func testEncryptedAfterKill(t *testing.T, h Harness, bs []Backup) {
	if h.OneBlob {
		return // never encrypted (testEncrypted)
	}
	d := h.New(t)
	key := AgeKey(t)
	b := bs[0]
	to := Recipients(t, key)
	plan := to.Plan(b.Manifest)
	up, err := d.Begin(t.Context(), plan)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range plan.Files {
		open := func() (io.ReadCloser, error) {
			file, err := os.Open(filepath.Join(b.Dir, f.Name))
			if err != nil {
				return nil, err
			}
			enc, err := to.Encrypt(file)
			return struct {
				io.Reader
				io.Closer
			}{enc, file}, err
		}
		if _, _, err := up.Put(t.Context(), f, open); err != nil {
			t.Fatalf("put %s: %v", f.Name, err)
		}
	}
	// Killed here: neither Commit nor Close runs.
	res, err := destination.UploadDir(t.Context(), d, b.Dir, Recipients(t, key))
	if err != nil {
		t.Fatalf("re-run of an encrypted upload killed before its commit: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "download")
	if _, err := destination.Download(t.Context(), d, res.Name, dir, Identity(t, key)); err != nil {
		t.Fatalf("download after the re-run: %v", err)
	}
	sameFiles(t, b.Dir, dir)
}

// ageDecrypts checks that the age command-line tool decrypts each stored
// object of backup name to the file save wrote.
func ageDecrypts(t *testing.T, d destination.Dest, name string, k Key, dir string) {
	cli, err := exec.LookPath("age")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("age is not installed; .ci/run installs it")
		}
		t.Log("age is not installed: the interop check did not run")
		return
	}
	s, err := d.Open(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range s.Manifest().Files {
		r, err := s.Open(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		enc := filepath.Join(t.TempDir(), f.Name+".age")
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(enc, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), f.Name)
		if msg, err := exec.Command(cli, "-d", "-i", k.Identity, "-o", out, enc).CombinedOutput(); err != nil {
			t.Fatalf("age -d %s: %v: %s", f.Name, err, msg)
		}
		want, _ := os.ReadFile(filepath.Join(dir, f.Name))
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, want) {
			t.Errorf("age -d of the stored %s differs from the file save wrote", f.Name)
		}
	}
}

// testTampered changes stored bytes where they rest: download and verify
// fail with exit 4 and leave nothing, in the clear and encrypted alike.
func testTampered(t *testing.T, h Harness, bs []Backup) {
	k := AgeKey(t)
	for _, c := range []struct {
		name string
		to   *encryption.Recipients
		id   *encryption.Identity
	}{
		{"plain", nil, nil},
		{"encrypted", Recipients(t, k), Identity(t, k)},
	} {
		if c.to != nil && h.OneBlob {
			continue // refused, as testEncrypted checks
		}
		t.Run(c.name, func(t *testing.T) {
			d := h.New(t)
			res, err := destination.UploadDir(t.Context(), d, bs[0].Dir, c.to)
			if err != nil {
				t.Fatal(err)
			}
			s, err := d.Open(t.Context(), res.Name)
			if err != nil {
				t.Fatal(err)
			}
			f := *s.Manifest().File(manifest.KindSnapshot)
			s.Close()
			tamper(t, h, res, f)

			dir := filepath.Join(t.TempDir(), "download")
			_, err = destination.Download(t.Context(), d, res.Name, dir, c.id)
			if exitcode.Of(err) != exitcode.Verify {
				t.Errorf("download of changed stored bytes = %v (exit %d), want exit %d", err, exitcode.Of(err), exitcode.Verify)
			}
			assertAbsent(t, dir)
			_, err = destination.Verify(t.Context(), d, res.Name, verify.Options{Log: Log(t)}, nil)
			if exitcode.Of(err) != exitcode.Verify {
				t.Errorf("verify of changed stored bytes = %v (exit %d), want exit %d", err, exitcode.Of(err), exitcode.Verify)
			}
		})
	}
}

func assertAbsent(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s was left behind (%v)", dir, err)
	}
}

// sameFiles checks that dir holds exactly the files of want, byte for byte.
func sameFiles(t *testing.T, want, dir string) {
	t.Helper()
	we, _ := os.ReadDir(want)
	ge, _ := os.ReadDir(dir)
	if len(ge) != len(we) {
		t.Fatalf("%s holds %d files, want %d", dir, len(ge), len(we))
	}
	for _, e := range we {
		a, _ := os.ReadFile(filepath.Join(want, e.Name()))
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from the file save wrote (%v)", filepath.Join(dir, e.Name()), err)
		}
	}
}
