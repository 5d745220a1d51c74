package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

func downloadCommand() *command {
	return &command{
		name:    "download",
		args:    []string{"BACKUP", "DIR"},
		summary: "fetch one backup (as list prints it: gs://bucket/prefix/<cluster-id>/<ts>-<sha>, docker://HOST/REPO:TAG, oci:PATH:TAG, or by manifest digest docker://HOST/REPO@sha256:...; or --latest of a destination) into a new or empty DIR, checked, laid out for cluster-restore.sh",
		setup: func(fs *pflag.FlagSet) runFunc {
			var (
				latest    bool
				clusterID string
			)
			fs.BoolVar(&latest, "latest", false, "BACKUP is a destination (as given to upload): fetch its newest complete backup")
			fs.StringVar(&clusterID, "cluster-id", "", "with --latest, the cluster whose backup to fetch (needed when the destination holds several)")
			df := addDestFlags(fs, "fail when the service sends nothing for this long", true)
			identity := addIdentityFlag(fs)
			return func(ctx context.Context, env *env, args []string) error {
				o, err := df.options(env)
				if err != nil {
					return err
				}
				id, err := readIdentity(*identity)
				if err != nil {
					return err
				}
				var name string
				// The newest backup that passes its check: on the worst
				// day, the one to restore.
				b, err := withBackup(ctx, env, o, args[0], latest, clusterID, destination.LatestGood, func(d destination.Dest, n string) (*manifest.Backup, error) {
					name = n
					b, err := destination.Download(ctx, d, n, args[1], id)
					if errors.Is(err, destination.ErrDownloaded) {
						return checkDownloaded(ctx, env, args[1])
					}
					return b, err
				})
				if err != nil {
					return err
				}
				// Absolute: the line is pasted into a root shell, which
				// sudo -i starts in another directory.
				dir, err := filepath.Abs(args[1])
				if err != nil {
					dir = args[1]
				}
				env.log.Info("backup downloaded and verified; restore with: cluster-restore.sh "+dir,
					"backup", name, "snapshot", b.File(manifest.KindSnapshot).Name, "revision", b.Etcd.Revision)
				return nil
			}
		},
	}
}

// checkDownloaded checks the backup that dir holds from an earlier run, in
// place of downloading it again. A copy that fails its check says nothing
// of the stored backup, which must not be passed over for an older one:
// it is for the operator to remove.
func checkDownloaded(ctx context.Context, env *env, dir string) (*manifest.Backup, error) {
	env.log.Info(dir + " holds this backup already, from an earlier download: checking it there")
	b, err := verify.Dir(ctx, dir, verify.Options{Log: env.log})
	if exitcode.Of(err) == exitcode.Verify {
		return nil, exitcode.With(exitcode.Usage, fmt.Errorf("%w; the stored backup was not read: empty %s and download again", err, dir))
	}
	return b, err
}
