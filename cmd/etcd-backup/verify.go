package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

func verifyCommand() *command {
	return &command{
		name:    "verify",
		args:    []string{"TARGET"},
		summary: "check a backup end to end against its backup.json: a local DIR, one backup as download takes it, or --latest of a destination; --restore adds a trial restore",
		setup: func(fs *pflag.FlagSet) runFunc {
			var (
				o         verify.Options
				latest    bool
				clusterID string
				maxAge    time.Duration
			)
			fs.BoolVar(&latest, "latest", false, "TARGET is a destination (as given to upload): verify its newest complete backup")
			fs.StringVar(&clusterID, "cluster-id", "", "with --latest, the cluster whose backup to verify (needed when the prefix holds several)")
			fs.BoolVar(&o.Restore, "restore", false, "also restore the snapshot into a scratch directory with etcd's restore code and compare")
			fs.StringVar(&o.ScratchDir, "scratch-dir", "", "where the trial restore writes (default: the system temp dir); needs about the snapshot's size and 64 MiB, and the backup's size besides when BACKUP is stored at a destination")
			fs.Var((*longDuration)(&maxAge), "max-age", "exit 5 when the backup verified (with --latest: the newest complete one) is older than this, or there is none, or it is dated over 5m after this machine's clock, e.g. 26h (0: any age)")
			df := addDestFlags(fs, "fail when the service answers nothing for this long", false)
			identity := addIdentityFlag(fs)
			return func(ctx context.Context, env *env, args []string) error {
				o.Log = env.log
				env.metrics.ClusterID = clusterID
				if o.Restore && o.ScratchDir != "" {
					// Before a backup is listed or fetched for a restore
					// that cannot start.
					if err := checkScratchDir(o.ScratchDir); err != nil {
						return err
					}
				}
				check := verify.Dir
				if destinations().Knows(args[0]) {
					check = func(ctx context.Context, target string, o verify.Options) (*manifest.Backup, error) {
						do, err := df.options(env)
						if err != nil {
							return nil, err
						}
						id, err := readIdentity(*identity)
						if err != nil {
							return nil, err
						}
						// The newest complete backup, even when it fails
						// its check: the scheduled verify must fail (and
						// alert) then, not pass on an older one. Backups
						// that list already calls corrupt are passed over,
						// and counted, so that they alert too.
						pick := func(d destination.Dest, found destination.Found, log *slog.Logger, use func(string) (*manifest.Backup, error)) (*manifest.Backup, error) {
							env.metrics.Listed, env.metrics.Corrupt = true, len(found.Corrupt)
							return destination.Latest(d, found, log, use)
						}
						return withBackup(ctx, env, do, target, latest, clusterID, pick, func(d destination.Dest, name string) (*manifest.Backup, error) {
							env.metrics.Destination = d.URL()
							return destination.Verify(ctx, d, name, o, id)
						})
					}
				} else if guess := destinations().Guess(args[0]); guess != "" && !isDir(args[0]) {
					return usage("%s is not a backup directory; as a destination, give %s", args[0], guess)
				} else if latest || clusterID != "" {
					return usage("--latest and --cluster-id apply to a destination TARGET (gs://, docker://, oci:), not to a local directory")
				}
				b, err := check(ctx, args[0], o)
				if maxAge > 0 && errors.Is(err, destination.ErrNoBackup) {
					return exitcode.With(exitcode.Stale, err)
				}
				if err != nil {
					return err
				}
				env.metrics.Backup(b)
				env.metrics.NewestGood = b.CreatedAt
				env.log.Info("backup verified", "target", args[0], "revision", b.Etcd.Revision, "keys", b.Etcd.KeyCount, "timestamp", b.Timestamp)
				return checkAge(b, maxAge, time.Now())
			}
		},
	}
}

// checkAge fails with exitcode.Stale when b, verified good, was taken more
// than maxAge before now, or is dated after now by more than clocks may
// disagree: that date proves nothing. A maxAge of 0 accepts any age.
func checkAge(b *manifest.Backup, maxAge time.Duration, now time.Time) error {
	if maxAge == 0 {
		return nil
	}
	age := now.Sub(b.CreatedAt)
	if -age > destination.MaxClockSkew {
		return exitcode.With(exitcode.Stale, fmt.Errorf("backup %s of cluster %s is dated %s after this machine's clock, so its age proves nothing: the clock of the master that took it was ahead, or this machine's is behind; set the clock right, and once a new backup is stored delete this one by hand, which --latest takes for the newest until its date has passed", b.Timestamp, b.ClusterKey(), (-age).Round(time.Minute)))
	}
	if age > maxAge {
		return exitcode.With(exitcode.Stale, fmt.Errorf("backup %s of cluster %s is good but was taken %s ago, more than --max-age %s: take a backup, and find out why none was taken since", b.Timestamp, b.ClusterKey(), age.Round(time.Second), maxAge))
	}
	return nil
}

// checkScratchDir refuses a --scratch-dir that is not an existing
// directory this user may write: a mistyped path, an unmounted volume or
// one without the pod's fsGroup, which is the configuration's fault, not
// the backup's.
func checkScratchDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return usage("--scratch-dir %s does not exist: give an existing directory with room for the trial restore", dir)
	case err != nil:
		return usage("--scratch-dir: %v", err)
	case !fi.IsDir():
		return usage("--scratch-dir %s is not a directory: give an existing directory with room for the trial restore", dir)
	}
	if err := atomicfile.Writable(dir); err != nil {
		return usage("--scratch-dir %s is not writable: %v: give a directory that uid %d may write", dir, err, os.Getuid())
	}
	return nil
}

// isDir reports whether path is a directory.
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
