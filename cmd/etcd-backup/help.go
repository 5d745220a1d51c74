package main

// commandAbout is what a command's --help says after its flags: where
// credentials come from and where things go, which no flag describes.
var commandAbout = map[string]string{
	"upload": `Credentials: Cloud Storage uses Application Default Credentials: Workload Identity
or the metadata server, or the key file $GOOGLE_APPLICATION_CREDENTIALS names.
$STORAGE_EMULATOR_HOST points at an emulator instead. Registries: --authfile (or
$REGISTRY_AUTH_FILE, then podman's auth.json) and --cert-dir.

Layout: DEST/<cluster-id>/<ts>-<first 12 hex of the snapshot's SHA-256>/ holds the
snapshot, the resources archive and backup.json, written last: a backup without
backup.json is incomplete and never counts. In a registry, one tag a backup,
<cluster-id>_<ts>-<12 hex>, the manifest pushed last. Two backups of one cluster in
the same second get different names; nothing is ever overwritten.

With --encrypt-to the snapshot and archive are stored as age files that only the
matching private keys can read; backup.json stays readable and holds no secret.`,
	"download": `DIR is created (mode 0700) or must be empty. The files are checked as they
stream and backup.json is written last; cluster-restore.sh takes DIR as it is. An
encrypted backup needs --identity, the private key, brought here for the restore
only; DIR then holds the decrypted backup.`,
	"prune": `Only backups etcd-backup wrote are removed, never the newest good one of a
cluster; incomplete and corrupt backups do not count towards --keep-last.`,
}

// commandExamples end each command's --help.
var commandExamples = map[string][]string{
	"save": {
		"etcd-backup save --host-root /host /backup",
		"etcd-backup save --wait-for-version 4.18.13 --wait-timeout 2h --timeout 2h30m /backup",
	},
	"upload": {
		"etcd-backup upload --keep-within 720h /backup gs://BUCKET/etcd-backups",
		"etcd-backup upload --resources-to gs://KEYS-BUCKET/etcd /backup gs://BUCKET/etcd-backups",
		"etcd-backup upload --encrypt-to age1... --authfile auth.json /backup docker://MIRROR/etcd/backups",
	},
	"list": {
		"etcd-backup list gs://BUCKET/etcd-backups",
	},
	"download": {
		"etcd-backup download --latest gs://BUCKET/etcd-backups /var/tmp/restore",
		"etcd-backup download gs://BUCKET/etcd-backups/CLUSTER-ID/2026-12-03_021500-0123456789ab /var/tmp/restore",
		"etcd-backup download --latest --identity etcd-backup.key oci:/media/usb/etcd /var/tmp/restore",
	},
	"verify": {
		"etcd-backup verify --restore /backup",
		"etcd-backup verify --latest --max-age 26h gs://BUCKET/etcd-backups",
	},
	"prune": {
		"etcd-backup prune --dry-run --keep-last 14 gs://BUCKET/etcd-backups",
	},
	"version": {
		"etcd-backup version",
	},
}
