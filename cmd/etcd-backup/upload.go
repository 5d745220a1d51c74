package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/remote"
	"github.com/etcd-backup/etcd-backup/internal/results"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

// defaultProgressInterval is how often transfers log progress.
const defaultProgressInterval = 5 * time.Second

func uploadCommand() *command {
	return &command{
		name:         "upload",
		args:         []string{"DIR", "DEST"},
		lastOptional: true,
		summary:      "verify the backup in DIR and copy it to DEST (gs://bucket/prefix), backup.json last; --keep-last/--keep-within then prune",
		setup: func(fs *pflag.FlagSet) runFunc {
			var (
				o                remote.UploadOptions
				resourcesTo      string
				policy           remote.Policy
				progressInterval time.Duration
				stallTimeout     time.Duration
				skip             bool
			)
			fs.StringVar(&resourcesTo, "resources-to", "", "send the static resources archive, which holds the etcd encryption keys, below this gs://bucket/prefix instead of DEST; backup.json records where")
			fs.StringVar(&o.KMSKey, "kms-key", "", "Cloud KMS key that encrypts the objects (CMEK): projects/P/locations/L/keyRings/R/cryptoKeys/K")
			fs.IntVar(&policy.KeepLast, "keep-last", 0, "after the upload, remove all but the newest N complete backups of this cluster at DEST (0: keep all)")
			fs.DurationVar(&policy.KeepWithin, "keep-within", 0, "after the upload, remove complete backups of this cluster older than this, e.g. 720h (0: keep all)")
			fs.DurationVar(&progressInterval, "progress-interval", defaultProgressInterval, "how often to log upload progress")
			fs.DurationVar(&stallTimeout, "stall-timeout", gcs.DefaultStallTimeout, "send an object again when the service takes none of it for this long"+stallTimeoutUsage)
			fs.BoolVar(&skip, "skip-if-no-dest", false, "with no DEST, log that nothing is uploaded and succeed, writing every upload result empty (for Tasks where the upload is optional)")
			return func(ctx context.Context, env *env, args []string) error {
				dir := args[0]
				if args[1] == "" {
					if skip {
						env.log.Info("no destination given; skipping upload")
						env.metrics.Skipped = true
						// A Pipeline that returns an upload result fails
						// when the Task did not write it, so every result is
						// written, empty.
						return results.Write(env.resultsDir, skippedResults())
					}
					return usage("missing DEST (argument, or $%sDEST)", envPrefix)
				}
				dest, err := parseDest(args[1])
				if err != nil {
					return err
				}
				env.metrics.Destination = dest.String()
				if resourcesTo != "" {
					to, err := parseDest(resourcesTo)
					if err != nil {
						return usage("--resources-to: %v", err)
					}
					o.ResourcesTo = &to
				}
				if err := checkKMSKey(o.KMSKey); err != nil {
					return err
				}
				retain := policy != remote.Policy{}
				if retain {
					if err := policy.Check(); err != nil {
						return err
					}
				}
				if progressInterval <= 0 || stallTimeout <= 0 {
					return usage("--progress-interval and --stall-timeout must be positive")
				}
				c, closeFn, err := newRemote(ctx, env, progressInterval, gcs.Options{StallTimeout: stallTimeout})
				if err != nil {
					return err
				}
				defer closeFn()
				// A corrupt backup is never shipped: the listing now, each
				// file's content as it is sent.
				b, err := verify.Listing(dir)
				if err != nil {
					return fmt.Errorf("refusing to upload %s: %w", dir, err)
				}
				env.metrics.Backup(b)
				up, err := c.Upload(ctx, dir, b, dest, o)
				if err != nil {
					return err
				}
				if err := results.Write(env.resultsDir, uploadResults(up)); err != nil {
					return err
				}
				if !retain {
					return nil
				}
				decisions, err := c.Prune(ctx, dest, remote.PruneOptions{Policy: policy, ClusterID: up.Ref.ClusterID})
				logDecisions(env, decisions)
				if err != nil {
					return fmt.Errorf("backup uploaded, but applying retention failed: %w", err)
				}
				return nil
			}
		},
	}
}

// stallTimeoutUsage is the part of --stall-timeout's help that every
// command shares.
const stallTimeoutUsage = "; also the deadline of each attempt at a metadata request (stat, list, delete), retried for up to a minute"

// stallTimeoutFlag defines --stall-timeout for a command that only reads
// metadata or objects.
func stallTimeoutFlag(fs *pflag.FlagSet) *time.Duration {
	return fs.Duration("stall-timeout", gcs.DefaultStallTimeout, "fail when the service answers nothing for this long"+stallTimeoutUsage)
}

// newRemote connects to Cloud Storage, or to the emulator that
// $STORAGE_EMULATOR_HOST names, with o's settings.
func newRemote(ctx context.Context, env *env, progressInterval time.Duration, o gcs.Options) (*remote.Client, func(), error) {
	if o.StallTimeout <= 0 {
		return nil, nil, usage("--stall-timeout must be positive")
	}
	o.EmulatorHost, _ = env.lookup("STORAGE_EMULATOR_HOST")
	c, err := gcs.New(ctx, o)
	if errors.Is(err, gcs.ErrNoCredentials) {
		return nil, nil, usage("%v", err)
	}
	if err != nil {
		return nil, nil, err
	}
	rc := &remote.Client{
		Bucket:           func(name string) remote.Store { return c.Bucket(name) },
		Log:              env.log,
		ProgressInterval: progressInterval,
	}
	return rc, func() { c.Close() }, nil
}

func parseDest(s string) (store.URL, error) {
	u, err := store.ParseURL(s)
	if err != nil {
		return store.URL{}, usage("%v", err)
	}
	return u, nil
}

var kmsKeyName = regexp.MustCompile(`^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$`)

func checkKMSKey(key string) error {
	if key != "" && !kmsKeyName.MatchString(key) {
		return usage("--kms-key %q: want projects/P/locations/L/keyRings/R/cryptoKeys/K", key)
	}
	return nil
}

// artifact is the Tekton Chains type hint for the uploaded backup.
type artifact struct {
	URI             string `json:"uri"`
	Digest          string `json:"digest"`
	IsBuildArtifact string `json:"isBuildArtifact"`
}

func uploadResults(up *remote.Uploaded) []results.Result {
	return uploadResultList(up.SnapshotURI, up.ResourcesURI, up.ManifestURI, artifact{
		URI:             up.ManifestURI,
		Digest:          "sha256:" + up.Manifest.File(manifest.KindSnapshot).SHA256,
		IsBuildArtifact: "true",
	})
}

// skippedResults are the results of an upload that --skip-if-no-dest
// skipped: empty, and an artifact that Chains does not take for a build
// output.
func skippedResults() []results.Result {
	return uploadResultList("", "", "", artifact{IsBuildArtifact: "false"})
}

func uploadResultList(snapshotURI, resourcesURI, manifestURI string, a artifact) []results.Result {
	raw, _ := json.Marshal(a)
	return []results.Result{
		{Name: "snapshot-uri", Value: snapshotURI},
		{Name: "resources-uri", Value: resourcesURI},
		{Name: "manifest-uri", Value: manifestURI},
		{Name: "backup-ARTIFACT_OUTPUTS", Value: string(raw)},
	}
}
