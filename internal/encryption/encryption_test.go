package encryption

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"filippo.io/age"
	"filippo.io/age/armor"
	"golang.org/x/crypto/ssh"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// ageKey writes a new age identity file and returns its path and public key.
func ageKey(t *testing.T) (string, string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.txt")
	content := "# created: test\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, id.Recipient().String()
}

// sshKey writes a new ed25519 SSH private key, with a passphrase if one is
// given, and returns its path and authorized_keys line.
func sshKey(t *testing.T, passphrase string) (string, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return path, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub))) + " admin@laptop"
}

func encrypt(t *testing.T, rs *Recipients, plain []byte) []byte {
	t.Helper()
	r, err := rs.Encrypt(bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func decrypt(id *Identity, cipher []byte) ([]byte, error) {
	r, err := id.Decrypt(bytes.NewReader(cipher), []string{"age1example"})
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestRoundTripEitherRecipient(t *testing.T) {
	agePath, agePub := ageKey(t)
	sshPath, sshPub := sshKey(t, "")
	rs, err := ParseRecipients([]string{agePub, sshPub}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The SSH key's comment names a person: backup.json leaves it out.
	if got := rs.Keys(); len(got) != 2 || got[0] != agePub || strings.Contains(got[1], "admin@laptop") || !strings.HasPrefix(got[1], "ssh-ed25519 ") {
		t.Fatalf("Keys() = %q", got)
	}
	plain := bytes.Repeat([]byte("etcd snapshot bytes "), 10000)
	cipher := encrypt(t, rs, plain)
	if bytes.Contains(cipher, plain[:100]) {
		t.Fatal("ciphertext holds plaintext")
	}
	for _, path := range []string{agePath, sshPath} {
		id, err := ReadIdentity(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decrypt(id, cipher)
		if err != nil {
			t.Fatalf("decrypt with %s: %v", filepath.Base(path), err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("decrypt with %s: plaintext differs", filepath.Base(path))
		}
	}
}

// TestEncryptFillsReads: each read of the ciphertext is filled, not cut at
// one 64 KiB age chunk, so that a destination that hands each read to
// another goroutine pays for one hand-off per read it asked for; and an
// error of the source (a file that fails its check) still ends the stream.
func TestEncryptFillsReads(t *testing.T) {
	agePath, agePub := ageKey(t)
	rs, err := ParseRecipients([]string{agePub}, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, 1<<20+12345)
	rand.Read(plain)
	r, err := rs.Encrypt(bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	var cipher []byte
	for {
		n, err := r.Read(buf)
		cipher = append(cipher, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n != len(buf) {
			t.Fatalf("a read before the end returned %d bytes of %d", n, len(buf))
		}
	}
	id, err := ReadIdentity(agePath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decrypt(id, cipher); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("decrypt: %v (plaintext equal: %v)", err, bytes.Equal(got, plain))
	}

	changed := errors.New("snapshot changed")
	r, err = rs.Encrypt(io.MultiReader(bytes.NewReader(plain[:200<<10]), iotest.ErrReader(changed)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, changed) {
		t.Fatalf("a failing source: %v, want %v", err, changed)
	}
}

func TestWrongIdentity(t *testing.T) {
	_, pub := ageKey(t)
	other, _ := ageKey(t)
	rs, err := ParseRecipients([]string{pub}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ReadIdentity(other, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = id.Decrypt(bytes.NewReader(encrypt(t, rs, []byte("x"))), rs.Keys())
	if !errors.Is(err, ErrNoIdentity) || exitcode.Of(err) != exitcode.Usage {
		t.Fatalf("err = %v (exit %d), want ErrNoIdentity, exit 2", err, exitcode.Of(err))
	}
	if !strings.Contains(err.Error(), pub) || !strings.Contains(err.Error(), other) {
		t.Fatalf("error %q names neither the recipients nor the identity file", err)
	}
}

func TestTamperedCiphertextFails(t *testing.T) {
	path, pub := ageKey(t)
	rs, _ := ParseRecipients([]string{pub}, nil)
	id, _ := ReadIdentity(path, nil)
	cipher := encrypt(t, rs, bytes.Repeat([]byte{7}, 200000))
	for name, mangle := range map[string]func([]byte) []byte{
		"changed byte": func(c []byte) []byte { c[len(c)/2] ^= 1; return c },
		"cut short":    func(c []byte) []byte { return c[:len(c)-100] },
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decrypt(id, mangle(bytes.Clone(cipher))); err == nil {
				t.Fatal("a damaged age file decrypted without error")
			}
		})
	}
}

func TestParseRecipientsErrors(t *testing.T) {
	_, pub := ageKey(t)
	_, sshPub := sshKey(t, "")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "# the backup team\n"+pub+"\n\n  "+sshPub+"  \n")
	rs, err := ParseRecipients(nil, []string{good})
	if err != nil || len(rs.Keys()) != 2 {
		t.Fatalf("good file: %v, %v", rs, err)
	}
	if rs, err := ParseRecipients(nil, nil); rs != nil || err != nil {
		t.Fatalf("no recipients: %v, %v; want nil, nil", rs, err)
	}
	secret := "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
	for _, tc := range []struct {
		name  string
		keys  []string
		files []string
		want  string
	}{
		{"bad line in file", nil, []string{write("bad", "# ops\n"+pub+"\nnot-a-key\n")}, "bad, line 3:"},
		{"only comments", nil, []string{write("empty", "# nothing\n\n")}, "holds no recipient"},
		{"missing file", nil, []string{filepath.Join(dir, "absent")}, "recipients file " + filepath.Join(dir, "absent") + ": no such file"},
		{"directory", nil, []string{dir}, "recipients file " + dir + ": is a directory"},
		{"malformed age key", []string{"age1qqqq"}, nil, "malformed public key"},
		{"plugin recipient", []string{"age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t"}, nil, "age1yubikey1qwt50d05... is a recipient whose private key only an age plugin can use (age-plugin-yubikey)"},
		{"tagged recipient", []string{"age1tag1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t"}, nil, "only an age plugin can use (a key on a hardware token)"},
		{"private key as recipient", []string{secret}, nil, "that is a private key"},
		{"private key line in file", nil, []string{write("priv", secret+"\n")}, "priv, line 1: that is a private key"},
		{"unknown type", []string{"ecdsa-sha2-nistp256 AAAA"}, nil, "not an age public key"},
		{"a recipients file given as a key", []string{good}, nil, "--encrypt-to: " + good + " is a file: give it with --encrypt-to-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRecipients(tc.keys, tc.files)
			if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v (exit %d), want exit 2 with %q", err, exitcode.Of(err), tc.want)
			}
			if strings.Contains(err.Error(), "AGE-SECRET-KEY-1QQ") {
				t.Fatalf("error %q quotes a private key", err)
			}
		})
	}
}

// protectedKey writes the age identity at keyPath protected by
// passphrase, as age -p (with -a when armored) does, and returns its path.
func protectedKey(t *testing.T, keyPath, passphrase string, armored bool) string {
	t.Helper()
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(10) // age -p uses 18; a test need not wait for it
	var buf bytes.Buffer
	var out io.WriteCloser = nopCloser{&buf}
	if armored {
		out = armor.NewWriter(&buf)
	}
	w, err := age.Encrypt(out, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(key); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	path := keyPath + ".age"
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// TestProtectedIdentity: an identity file that age -p protected, armored or
// not, decrypts once its passphrase is given, as age -d -i asks for it.
func TestProtectedIdentity(t *testing.T) {
	keyPath, pub := ageKey(t)
	rs, err := ParseRecipients([]string{pub}, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("etcd snapshot bytes")
	cipher := encrypt(t, rs, plain)
	for _, armored := range []bool{false, true} {
		path := protectedKey(t, keyPath, "correct horse", armored)
		var asked []string
		id, err := ReadIdentity(path, func(p string) ([]byte, error) {
			asked = append(asked, p)
			return []byte("correct horse"), nil
		})
		if err != nil {
			t.Fatalf("armored %v: %v", armored, err)
		}
		if len(asked) != 1 || asked[0] != path {
			t.Errorf("armored %v: asked for %q, want once for %s", armored, asked, path)
		}
		if got, err := decrypt(id, cipher); err != nil || !bytes.Equal(got, plain) {
			t.Errorf("armored %v: decrypt = %q, %v", armored, got, err)
		}
	}
}

// TestProtectedSSHIdentity: an SSH private key under a passphrase, ed25519
// or RSA, decrypts once its passphrase is given, as age -d -i asks for it.
// It was refused, which sent an administrator to strip the passphrase
// from a copy of the key at the worst moment.
func TestProtectedSSHIdentity(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPath, edPub := sshKey(t, "hunter2")
	rsaPath := filepath.Join(t.TempDir(), "id_rsa")
	block, err := ssh.MarshalPrivateKeyWithPassphrase(rsaKey, "test", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rsaPath, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	rsaSSH, err := ssh.NewPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("etcd snapshot bytes")
	for _, k := range []struct{ name, path, pub string }{
		{"ed25519", edPath, edPub},
		{"rsa", rsaPath, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rsaSSH)))},
	} {
		t.Run(k.name, func(t *testing.T) {
			rs, err := ParseRecipients([]string{k.pub}, nil)
			if err != nil {
				t.Fatal(err)
			}
			asked := 0
			id, err := ReadIdentity(k.path, func(p string) ([]byte, error) {
				asked++
				return []byte("hunter2"), nil
			})
			if err != nil || asked != 1 {
				t.Fatalf("read: %v, asked %d times; want the identity, asked once", err, asked)
			}
			if got, err := decrypt(id, encrypt(t, rs, plain)); err != nil || !bytes.Equal(got, plain) {
				t.Errorf("decrypt = %q, %v", got, err)
			}
		})
	}
}

func TestReadIdentityErrors(t *testing.T) {
	locked, _ := sshKey(t, "hunter2")
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, []byte("AGE-SECRET-KEY-1NOTVALID\n"), 0o600)
	hardware := filepath.Join(t.TempDir(), "yubikey")
	os.WriteFile(hardware, []byte("#    Recipient: age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t\nAGE-PLUGIN-YUBIKEY-1NOTVALID\n"), 0o600)
	keyPath, _ := ageKey(t)
	protected := protectedKey(t, keyPath, "correct horse", true)
	alone, pub := ageKey(t)
	recipients := filepath.Join(t.TempDir(), "recipients.txt")
	os.WriteFile(recipients, []byte("# the backup team\n"+pub+"\n"), 0o600)
	_, sshPub := sshKey(t, "")
	pubFile := filepath.Join(t.TempDir(), "id_ed25519.pub")
	os.WriteFile(pubFile, []byte(sshPub+"\n"), 0o600)
	answer := func(pass string, err error) Passphrase {
		return func(string) ([]byte, error) { return []byte(pass), err }
	}
	for _, tc := range []struct {
		name, path string
		ask        Passphrase
		want       string
	}{
		{"passphrase", locked, nil, "passphrase-protected SSH key, whose passphrase cannot be asked for here"},
		{"passphrase, no terminal", locked, answer("", errors.New("open /dev/tty: no such device or address")), "whose passphrase could not be asked for (open /dev/tty"},
		{"passphrase, wrong one", locked, answer("hunter3", nil), "wrong passphrase"},
		{"garbage", garbage, nil, "want an age identity file"},
		{"plugin", hardware, nil, "is an age plugin's (a key on a hardware token), and this tool runs no plugin"},
		{"missing", garbage + ".absent", nil, "identity file " + garbage + ".absent: no such file"},
		{"directory", filepath.Dir(garbage), nil, "identity file " + filepath.Dir(garbage) + ": is a directory"},
		{"a recipients file", recipients, nil, "identity " + recipients + " holds public keys, as a recipients file does: give the private key"},
		{"an SSH public key", pubFile, nil, "identity " + pubFile + " holds public keys"},
		{"a Secret's mount path", filepath.Dir(alone), nil, "identity file " + filepath.Dir(alone) + ": is a directory; give the file in it, " + alone},
		{"protected, no way to ask", protected, nil, "protected by a passphrase, which cannot be asked for here"},
		{"protected, no terminal", protected, answer("", errors.New("open /dev/tty: no such device or address")), "could not be asked for (open /dev/tty"},
		{"protected, wrong passphrase", protected, answer("battery staple", nil), "wrong passphrase"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadIdentity(tc.path, tc.ask)
			if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v (exit %d), want exit 2 with %q", err, exitcode.Of(err), tc.want)
			}
			if strings.Contains(err.Error(), "NOTVALID") {
				t.Fatalf("error %q quotes the key file", err)
			}
		})
	}
}

// TestKeyFileMarks: key files saved on Windows start with a byte order
// mark. A UTF-8 one is skipped; UTF-16 text (Windows PowerShell's
// Out-File) is refused saying so, rather than as a key that does not parse.
func TestKeyFileMarks(t *testing.T) {
	keyPath, pub := ageKey(t)
	sshPath, sshPub := sshKey(t, "")
	marked := func(path, mark string) string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "marked")
		if err := os.WriteFile(out, append([]byte(mark), data...), 0o600); err != nil {
			t.Fatal(err)
		}
		return out
	}
	recipients := filepath.Join(t.TempDir(), "recipients")
	if err := os.WriteFile(recipients, []byte(pub+"\n"+sshPub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := ParseRecipients(nil, []string{marked(recipients, "\ufeff")})
	if err != nil || len(rs.Keys()) != 2 {
		t.Fatalf("recipients file with a UTF-8 mark: %v, %v; want both keys", rs, err)
	}
	cipher := encrypt(t, rs, []byte("etcd"))
	for _, path := range []string{keyPath, sshPath} {
		id, err := ReadIdentity(marked(path, "\ufeff"), nil)
		if err != nil {
			t.Fatalf("identity with a UTF-8 mark: %v", err)
		}
		if got, err := decrypt(id, cipher); err != nil || string(got) != "etcd" {
			t.Errorf("decrypt with %s: %q, %v", path, got, err)
		}
	}
	utf16 := "\xff\xfe" + strings.Join(strings.Split(pub, ""), "\x00") + "\x00"
	if _, err := ParseRecipients(nil, []string{marked(recipients, utf16)}); err == nil || !strings.Contains(err.Error(), "UTF-16") {
		t.Errorf("UTF-16 recipients file: %v, want it named UTF-16", err)
	}
	if _, err := ReadIdentity(marked(keyPath, utf16), nil); exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "UTF-16") {
		t.Errorf("UTF-16 identity: %v (exit %d), want exit %d naming UTF-16", err, exitcode.Of(err), exitcode.Usage)
	}
}

// TestAgeCLIInterop: what this package writes, the age command decrypts,
// and what the age command writes, this package decrypts.
func TestAgeCLIInterop(t *testing.T) {
	bin, err := exec.LookPath("age")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("the age command is not installed (.ci/run installs Debian's age)")
		}
		t.Skip("the age command is not installed (apt-get install age)")
	}
	keyPath, pub := ageKey(t)
	sshPath, sshPub := sshKey(t, "")
	plain := make([]byte, 3<<20+17)
	rand.Read(plain)
	rs, _ := ParseRecipients([]string{pub, sshPub}, nil)
	cipherPath := filepath.Join(t.TempDir(), "snapshot.db.age")
	if err := os.WriteFile(cipherPath, encrypt(t, rs, plain), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{keyPath, sshPath} {
		out, err := exec.Command(bin, "-d", "-i", id, cipherPath).Output()
		if err != nil {
			t.Fatalf("age -d -i %s: %v", filepath.Base(id), err)
		}
		if !bytes.Equal(out, plain) {
			t.Fatalf("age -d -i %s: plaintext differs", filepath.Base(id))
		}
	}
	cmd := exec.Command(bin, "-r", pub)
	cmd.Stdin = bytes.NewReader(plain)
	cipher, err := cmd.Output()
	if err != nil {
		t.Fatalf("age -r: %v", err)
	}
	id, _ := ReadIdentity(keyPath, nil)
	got, err := decrypt(id, cipher)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("decrypting age's output: %v (equal: %t)", err, bytes.Equal(got, plain))
	}
}

// TestUnseal: Unseal decrypts stored bytes that match their record, and a
// stored object that differs from it, by a byte or in length, fails with
// exit 4.
func TestUnseal(t *testing.T) {
	path, pub := ageKey(t)
	rs, _ := ParseRecipients([]string{pub}, nil)
	id, _ := ReadIdentity(path, nil)
	plain := bytes.Repeat([]byte("kv "), 100000)
	r, err := rs.Encrypt(bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	d := manifest.NewDigest()
	d.Write(stored)
	f := manifest.File{Name: "snapshot.db", Size: int64(len(plain)), Stored: &manifest.Stored{
		Encryption: Format, Recipients: rs.Keys(), Size: d.Size(), SHA256: d.SHA256(), CRC32C: d.CRC32C(),
	}}
	out, err := id.Unseal(bytes.NewReader(stored), f)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(out); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("unsealed: %v (equal: %t)", err, bytes.Equal(got, plain))
	}
	for name, tc := range map[string]struct {
		stored []byte
		record func(*manifest.Stored)
	}{
		"record says another CRC32C": {stored, func(s *manifest.Stored) { s.CRC32C++ }},
		"record says another size":   {stored, func(s *manifest.Stored) { s.Size++ }},
		"byte changed":               {func() []byte { c := bytes.Clone(stored); c[len(c)-5] ^= 1; return c }(), func(*manifest.Stored) {}},
	} {
		t.Run(name, func(t *testing.T) {
			g := f
			rec := *f.Stored
			tc.record(&rec)
			g.Stored = &rec
			// Without a key: the stored bytes alone.
			if _, err := io.Copy(io.Discard, CheckStored(bytes.NewReader(tc.stored), g)); !errors.Is(err, ErrStoredMismatch) || exitcode.Of(err) != exitcode.Verify {
				t.Errorf("CheckStored: %v, want ErrStoredMismatch, exit 4", err)
			}
			// With the key: decryption fails too, whichever notices first.
			out, err := id.Unseal(bytes.NewReader(tc.stored), g)
			if err == nil {
				_, err = io.Copy(io.Discard, out)
			}
			if exitcode.Of(err) != exitcode.Verify {
				t.Errorf("Unseal of a mismatching object: %v, want exit 4", err)
			}
		})
	}
}
