package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/encryption"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/results"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

func uploadCommand() *command {
	return &command{
		name:         "upload",
		args:         []string{"DIR", "DEST"},
		lastOptional: true,
		summary:      "verify the backup in DIR and copy it to DEST (gs://bucket/prefix, docker://HOST/REPO or oci:PATH), the commit marker last; --keep-last/--keep-within then prune",
		setup: func(fs *pflag.FlagSet) runFunc {
			var (
				gcsOpts destination.GCSOptions
				policy  destination.Policy
				format  string
				skip    bool
				to      []string
				toFiles []string
			)
			fs.StringVar(&gcsOpts.ResourcesTo, "resources-to", "", "gs:// only: send the static resources archive, which holds the etcd encryption keys, below this gs://bucket/prefix instead of DEST; backup.json records where")
			fs.StringVar(&gcsOpts.KMSKey, "kms-key", "", "gs:// only: Cloud KMS key that encrypts the objects (CMEK): projects/P/locations/L/keyRings/R/cryptoKeys/K")
			fs.IntVar(&policy.KeepLast, "keep-last", 0, "after the upload, remove all but the newest N complete backups of this cluster at DEST (0: keep all)")
			fs.Var((*longDuration)(&policy.KeepWithin), "keep-within", "after the upload, remove complete backups of this cluster older than this, e.g. 30d or 720h (0: keep all)")
			fs.StringVar(&format, "oci-format", destination.FormatArtifact, "docker:// and oci: only: artifact (an OCI artifact, one layer per file; the default) or image (a scratch image whose one layer is a tar of the backup directory, for registries that take only images; not with --encrypt-to)")
			fs.StringArrayVar(&to, "encrypt-to", nil, "encrypt the snapshot and archive to this public key as they are sent: an age key (age1...) or an SSH key (ssh-ed25519, ssh-rsa); repeatable, or several one a line; only the matching private key can read the backup")
			fs.StringArrayVar(&toFiles, "encrypt-to-file", nil, "encrypt to the public keys in this file, one a line, # comments (as age -R); repeatable")
			fs.BoolVar(&skip, "skip-if-no-dest", false, "with no DEST, log that nothing is uploaded and succeed, writing every upload result empty (for Tasks where the upload is optional)")
			df := addDestFlags(fs, "send again what the service takes none of for this long", true)
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
				if err := gcsOnly(args[1], map[string]string{"--resources-to": gcsOpts.ResourcesTo, "--kms-key": gcsOpts.KMSKey}); err != nil {
					return err
				}
				if err := checkKMSKey(gcsOpts.KMSKey); err != nil {
					return err
				}
				if format != destination.FormatArtifact && format != destination.FormatImage {
					return usage("--oci-format %q: want %q or %q", format, destination.FormatArtifact, destination.FormatImage)
				}
				recipients, err := encryption.ParseRecipients(keyLines(to), toFiles)
				if err != nil {
					return err
				}
				if recipients != nil && format == destination.FormatImage {
					return usage("--oci-format image stores the files as one tar layer, which this version does not encrypt: use --oci-format artifact with --encrypt-to")
				}
				retain := policy != destination.Policy{}
				if retain {
					if err := policy.Check(); err != nil {
						return err
					}
				}
				o, err := df.options(env)
				if err != nil {
					return err
				}
				o.GCS.KMSKey, o.GCS.ResourcesTo = gcsOpts.KMSKey, gcsOpts.ResourcesTo
				o.Registry.Format = format
				if format != destination.FormatArtifact && strings.HasPrefix(args[1], "gs://") {
					return usage("--oci-format applies to docker:// and oci: destinations, not %s", args[1])
				}
				d, err := destinations().Open(ctx, args[1], o)
				if err != nil {
					return err
				}
				defer d.Close()
				env.metrics.Destination = d.URL()
				// A corrupt backup is never shipped: the listing now, each
				// file's content as it is sent.
				b, err := verify.Listing(dir)
				if err != nil {
					return fmt.Errorf("refusing to upload: %w", err)
				}
				env.metrics.Backup(b)
				res, err := destination.UploadDir(ctx, d, dir, recipients)
				if err != nil {
					return err
				}
				if recipients == nil && b.EncryptionConfigArchived {
					env.log.Warn("uploaded without encryption a backup whose archive holds the cluster's etcd encryption config, the key to every Secret: anyone who can read " + d.URL() + " can read them; give --encrypt-to PUBLIC-KEY")
				}
				if err := results.Write(env.resultsDir, uploadResults(res, b)); err != nil {
					return err
				}
				if !retain {
					return nil
				}
				policy.Stored = res.Name
				decisions, err := destination.Prune(ctx, d, policy, b.ClusterKey(), time.Now(), false)
				logDecisions(env, decisions)
				if err != nil {
					return fmt.Errorf("backup uploaded, but applying retention failed: %w", err)
				}
				return nil
			}
		},
	}
}

// keyLines splits each --encrypt-to value into its lines, so that one
// environment variable or Task param can carry several keys.
func keyLines(values []string) []string {
	var keys []string
	for _, v := range values {
		for line := range strings.Lines(v) {
			if line = strings.TrimSpace(line); line != "" {
				keys = append(keys, line)
			}
		}
	}
	return keys
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

func uploadResults(res destination.Result, b *manifest.Backup) []results.Result {
	snap, archive := b.File(manifest.KindSnapshot), b.File(manifest.KindResources)
	a := artifact{URI: res.Files[manifest.FileName], Digest: "sha256:" + snap.SHA256, IsBuildArtifact: "true"}
	if res.ImageURL != "" {
		// In a registry Chains signs the manifest, by its digest.
		a.URI, a.Digest = res.ImageURL, res.Digest
	}
	return uploadResultList(res.Files[snap.Name], res.Files[archive.Name], res.Files[manifest.FileName], res.ImageURL, res.Digest, a)
}

// skippedResults are the results of an upload that --skip-if-no-dest
// skipped: empty, and an artifact that Chains does not take for a build
// output.
func skippedResults() []results.Result {
	return uploadResultList("", "", "", "", "", artifact{IsBuildArtifact: "false"})
}

// uploadResultList is every upload result. IMAGE_URL (HOST[:PORT]/REPO:TAG)
// and IMAGE_DIGEST (the manifest's), as Tekton Chains reads them, are
// empty but for a registry.
func uploadResultList(snapshotURI, resourcesURI, manifestURI, imageURL, imageDigest string, a artifact) []results.Result {
	raw, _ := json.Marshal(a)
	return []results.Result{
		{Name: "snapshot-uri", Value: snapshotURI},
		{Name: "resources-uri", Value: resourcesURI},
		{Name: "manifest-uri", Value: manifestURI},
		{Name: "IMAGE_URL", Value: imageURL},
		{Name: "IMAGE_DIGEST", Value: imageDigest},
		{Name: "backup-ARTIFACT_OUTPUTS", Value: string(raw)},
	}
}
