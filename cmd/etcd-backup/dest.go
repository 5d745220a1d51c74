package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci"
	"github.com/etcd-backup/etcd-backup/internal/encryption"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
)

// defaultProgressInterval is how often transfers log progress.
const defaultProgressInterval = 5 * time.Second

// destinations holds every kind of destination, by scheme: the one place
// that knows them.
func destinations() *destination.Registry {
	return destination.NewRegistry(remote.Factory(), oci.Registry(), oci.Layout())
}

// destFlags are the flags of every command that talks to a destination.
type destFlags struct {
	stallTimeout     time.Duration
	progressInterval time.Duration
	reg              destination.RegistryOptions
	tlsVerify        bool
}

// stallTimeoutUsage is the part of --stall-timeout's help that every
// command shares.
const stallTimeoutUsage = "; also the deadline of each attempt at a metadata request (stat, list, delete, manifest), retried for up to a minute"

func addDestFlags(fs *pflag.FlagSet, stallUsage string, progress bool) *destFlags {
	f := &destFlags{progressInterval: defaultProgressInterval}
	fs.DurationVar(&f.stallTimeout, "stall-timeout", gcs.DefaultStallTimeout, stallUsage+stallTimeoutUsage)
	if progress {
		fs.DurationVar(&f.progressInterval, "progress-interval", defaultProgressInterval, "how often to log transfer progress")
	}
	fs.StringVar(&f.reg.AuthFile, "authfile", "", "registry credentials (containers-auth.json or .dockerconfigjson, as a docker-registry Secret mounts it); default $REGISTRY_AUTH_FILE, then podman's")
	fs.StringVar(&f.reg.CertDir, "cert-dir", "", "directory with ca.crt, and client.cert/client.key for mutual TLS, for docker:// registries (as containers' certs.d)")
	fs.BoolVar(&f.tlsVerify, "tls-verify", true, "verify the registry's TLS certificate and require HTTPS; false only for a plain-HTTP or self-signed mirror")
	return f
}

// options are the destination settings the flags and the environment give.
func (f *destFlags) options(env *env) (destination.Options, error) {
	if f.stallTimeout <= 0 || f.progressInterval <= 0 {
		return destination.Options{}, usage("--progress-interval and --stall-timeout must be positive")
	}
	o := destination.Options{
		Log:              env.log,
		ProgressInterval: f.progressInterval,
		StallTimeout:     f.stallTimeout,
		Registry:         f.reg,
	}
	o.Registry.InsecureSkipTLSVerify = !f.tlsVerify
	o.GCS.EmulatorHost, _ = env.lookup("STORAGE_EMULATOR_HOST")
	o.GCS.CredentialsFile, _ = env.lookup("GOOGLE_APPLICATION_CREDENTIALS")
	return o, nil
}

// pickLatest chooses among the backups Newest found: destination.Latest or
// destination.LatestGood.
type pickLatest func(d destination.Dest, found destination.Found, log *slog.Logger, use func(name string) (*manifest.Backup, error)) (*manifest.Backup, error)

// withBackup opens the destination of BACKUP and calls use on the backup
// it names or, with latest, on the one pick chooses.
func withBackup(ctx context.Context, env *env, o destination.Options, s string, latest bool, clusterID string, pick pickLatest, use func(d destination.Dest, name string) (*manifest.Backup, error)) (*manifest.Backup, error) {
	if clusterID != "" && !latest {
		return nil, usage("--cluster-id goes with --latest; a backup URL already names its cluster")
	}
	var d destination.Dest
	var name string
	var err error
	if latest {
		d, err = destinations().Open(ctx, s, o)
	} else {
		d, name, err = destinations().OpenBackup(ctx, s, o)
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if !latest {
		return use(d, name)
	}
	found, err := destination.Newest(ctx, d, clusterID, env.log)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for _, e := range found.Ahead(now) {
		env.log.Warn(fmt.Sprintf("%s is dated %s UTC, %s after this machine's clock: the clock of the master that took it was ahead, or this machine's is behind; --latest goes by that date, so the last backup taken may be another (see 'etcd-backup list')", e.URL, e.Timestamp, e.Dated().Sub(now).Round(time.Minute)))
	}
	var used string
	b, err := pick(d, found, env.log, func(name string) (*manifest.Backup, error) {
		used = name
		return use(d, name)
	})
	if clean, ok := found.Fallback(used); ok && err == nil && b.Dirty {
		env.log.Warn(fmt.Sprintf("the backup taken at %s was taken with --force: its preflight checks were skipped, and it may not restore; the next newest taken with them is %s", b.Timestamp, clean.URL))
	}
	return b, err
}

// gcsOnly refuses a Cloud Storage setting for another kind of destination.
func gcsOnly(dest string, flags map[string]string) error {
	if strings.HasPrefix(dest, "gs://") {
		return nil
	}
	for flag, v := range flags {
		if v != "" {
			return usage("%s applies to gs:// destinations, not %s", flag, dest)
		}
	}
	return nil
}

// addIdentityFlag adds --identity, which only download and verify take:
// the private key never goes where backups are made.
func addIdentityFlag(fs *pflag.FlagSet) *string {
	return fs.String("identity", "", "age identity file (age-keygen; one protected with age -p asks for its passphrase) or SSH private key (one with a passphrase asks for it) that decrypts an encrypted backup; keep it off the cluster")
}

// readIdentity reads the identity file at path; none when path is empty.
func readIdentity(path string) (*encryption.Identity, error) {
	if path == "" {
		return nil, nil
	}
	return encryption.ReadIdentity(path, askPassphrase)
}

// askPassphrase asks on the terminal, as age does, for the passphrase of
// an identity file that age -p protected, or of an SSH key: download and
// verify of an encrypted backup run at an administrator's desk, where the
// key is.
func askPassphrase(path string) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer tty.Close()
	fmt.Fprintf(tty, "Enter passphrase for identity file %s: ", path)
	defer fmt.Fprintln(tty)
	return term.ReadPassword(int(tty.Fd()))
}
