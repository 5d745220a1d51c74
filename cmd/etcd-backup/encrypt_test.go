package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// TestEncryptedCommands uploads a backup encrypted to an age key (from a
// recipients file) and an SSH key (from the environment, as the Task's
// ENCRYPT_TO param sets it), and reads it back with each identity.
func TestEncryptedCommands(t *testing.T) {
	dir, b := savedBackup(t, 200)
	ageKey, sshKey := desttest.AgeKey(t), desttest.SSHKey(t)
	recipients := filepath.Join(t.TempDir(), "recipients.txt")
	if err := os.WriteFile(recipients, []byte("# the DR team\n"+ageKey.Public+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dest := "oci:" + filepath.Join(t.TempDir(), "layout")
	run := func(env map[string]string, args ...string) string {
		t.Helper()
		code, _, stderr := cli(t, env, args...)
		if code != 0 {
			t.Fatalf("etcd-backup %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
		return stderr
	}
	stderr := run(map[string]string{"ETCD_BACKUP_ENCRYPT_TO": sshKey.Public + "\n"}, "upload", "--encrypt-to-file", recipients, dir, dest)
	if strings.Contains(stderr, "without encryption") {
		t.Errorf("an encrypted upload warned that it was not encrypted:\n%s", stderr)
	}

	one := "oci:" + filepath.Join(t.TempDir(), "one")
	run(nil, "upload", "--encrypt-to", ageKey.Public, dir, one)
	for dest, want := range map[string]string{
		dest: ", " + ageKey.Public + ": give the identity that holds the private key of one of them with --identity FILE",
		one:  " is encrypted to " + ageKey.Public + ": give the identity that holds its private key with --identity FILE",
	} {
		code, _, stderr := cli(t, nil, "download", "--latest", dest, filepath.Join(t.TempDir(), "d"))
		if code != exitcode.Usage || !strings.Contains(stderr, want) {
			t.Errorf("download of %s without an identity: exit %d, want %d saying %q:\n%s", dest, code, exitcode.Usage, want, stderr)
		}
	}
	for _, k := range []desttest.Key{ageKey, sshKey} {
		down := filepath.Join(t.TempDir(), "down")
		run(map[string]string{"ETCD_BACKUP_IDENTITY": k.Identity}, "download", "--latest", dest, down)
		for _, f := range append(b.Files, manifest.File{Name: manifest.FileName}) {
			want, _ := os.ReadFile(filepath.Join(dir, f.Name))
			if got, err := os.ReadFile(filepath.Join(down, f.Name)); err != nil || string(got) != string(want) {
				t.Errorf("%s decrypted with %s differs from the saved one (%v)", f.Name, filepath.Base(k.Identity), err)
			}
		}
	}
	if stderr := run(nil, "verify", "--latest", dest); !strings.Contains(stderr, "contents were not checked") {
		t.Errorf("verify without an identity did not say what it could not check:\n%s", stderr)
	}
	run(nil, "verify", "--latest", "--restore", "--scratch-dir", t.TempDir(), "--identity", ageKey.Identity, dest)

	if !b.EncryptionConfigArchived {
		t.Fatal("the test cluster's backup holds no encryption config")
	}
	plain := run(nil, "upload", dir, "oci:"+filepath.Join(t.TempDir(), "plain"))
	if !strings.Contains(plain, "without encryption") || !strings.Contains(plain, "--encrypt-to") {
		t.Errorf("an unencrypted upload of the etcd encryption config did not warn:\n%s", plain)
	}
}

// TestEncryptToRefused: recipients that cannot be used stop the upload
// before anything is sent, with exit 2, and never echo a private key.
func TestEncryptToRefused(t *testing.T) {
	dir, _ := savedBackup(t, 20)
	k := desttest.AgeKey(t)
	secret, err := os.ReadFile(k.Identity)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "recipients.txt")
	if err := os.WriteFile(bad, []byte("# ok\n"+k.Public+"\nage1notakey\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secretLine := strings.TrimSpace(strings.Split(string(secret), "\n")[1])
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"bad line", []string{"--encrypt-to-file", bad}, "line 3"},
		{"private key", []string{"--encrypt-to", secretLine}, "private key"},
		{"missing file", []string{"--encrypt-to-file", bad + ".missing"}, "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			layout := filepath.Join(t.TempDir(), "layout")
			args := append(append([]string{"upload"}, c.args...), dir, "oci:"+layout)
			code, _, stderr := cli(t, nil, args...)
			if code != exitcode.Usage || !strings.Contains(stderr, c.want) || strings.Contains(stderr, secretLine) {
				t.Errorf("exit %d, want %d saying %q without the private key:\n%s", code, exitcode.Usage, c.want, stderr)
			}
			if _, err := os.Stat(layout); err == nil {
				t.Errorf("a refused upload created %s", layout)
			}
		})
	}
}
