// Command demo runs etcd-backup for real on one machine with nothing but Go:
// an etcd member with mutual TLS on a generated OpenShift-like host tree, a
// GCS emulator and an OCI registry on loopback, then the real binary's
// save, verify, upload, list, download and verify again, in the clear to
// the emulator and encrypted to the registry. `make demo` runs it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
	"github.com/etcd-backup/etcd-backup/internal/metrics/pushgatewaytest"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

func main() {
	bin := flag.String("bin", "bin/etcd-backup", "the etcd-backup binary to run")
	keys := flag.Int("keys", 5000, "filler keys to seed")
	keep := flag.Bool("keep", false, "keep the work directory (make demo KEEP=1)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo(ctx, *bin, *keys, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func demo(ctx context.Context, bin string, keys int, keep bool) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (run `make build` first)", err)
	}
	work, err := os.MkdirTemp("", "etcd-backup-demo-*")
	if err != nil {
		return err
	}
	defer finish(work, keep)

	step("starting etcd with mutual TLS on a generated OpenShift master host tree")
	c, err := testcluster.Start(ctx, filepath.Join(work, "cluster"), testcluster.Options{Keys: keys})
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("  member   %s (node %s)\n  host root %s\n  etcd.env  %s\n", c.Endpoint, c.NodeName, c.HostRoot, c.EtcdEnv)

	env := []string{"NODE_NAME=" + c.NodeName, "PATH=" + os.Getenv("PATH")}
	backupDir := filepath.Join(work, "backup")
	results := filepath.Join(work, "results")
	if err := os.Mkdir(results, 0o700); err != nil {
		return err
	}

	showMetrics, stopMetrics := startMetrics(work, &env)
	defer stopMetrics()

	step("etcd-backup save (zero configuration: NODE_NAME and the host tree only)")
	if err := runTool(ctx, bin, env, "save", "--host-root", c.HostRoot, "--results-dir", results, backupDir); err != nil {
		return err
	}
	step("etcd-backup verify --restore")
	if err := runTool(ctx, bin, env, "verify", "--restore", backupDir); err != nil {
		return err
	}
	if err := gcsRoundTrip(ctx, bin, env, work, backupDir); err != nil {
		return err
	}
	if err := registryRoundTrip(ctx, bin, env, work, backupDir); err != nil {
		return err
	}

	step("backup directory")
	if err := listDir(backupDir); err != nil {
		return err
	}
	step("results (what Tekton and Argo pass on)")
	if err := listResults(results); err != nil {
		return err
	}
	step("metrics (what Prometheus would see of these runs)")
	if err := showMetrics(); err != nil {
		return err
	}
	fmt.Println("\ndemo finished: save, verify, upload (in the clear and encrypted), list, download and a trial restore all ran for real")
	return nil
}

// finish says what becomes of the work directory, whether the demo
// succeeded or not: one looks at a failed demo's files.
func finish(work string, keep bool) {
	if keep {
		fmt.Printf("\nkept the demo directory %s (remove it with: rm -rf %s)\n", work, work)
		return
	}
	if err := os.RemoveAll(work); err != nil {
		fmt.Fprintf(os.Stderr, "demo: remove %s: %v\n", work, err)
		return
	}
	fmt.Printf("\nremoved the demo directory %s (make demo KEEP=1 keeps it)\n", work)
}

// startMetrics has every run push its metrics to a local Pushgateway when
// Debian's prometheus-pushgateway is installed; without it, they go to a
// textfile-collector file instead. It returns what prints them.
func startMetrics(work string, env *[]string) (show func() error, stop func()) {
	g, stop, err := pushgatewaytest.Run()
	if err != nil {
		file := filepath.Join(work, "etcd-backup.prom")
		fmt.Printf("  no Pushgateway (%v); metrics go to %s instead\n", err, file)
		*env = append(*env, "ETCD_BACKUP_METRICS_FILE="+file)
		return func() error { return printMetrics(os.Open(file)) }, func() {}
	}
	fmt.Printf("  Pushgateway at %s (ETCD_BACKUP_METRICS_PUSH_URL)\n", g.URL)
	*env = append(*env, "ETCD_BACKUP_METRICS_PUSH_URL="+g.URL)
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/metrics", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		return printMetrics(resp.Body, nil)
	}, stop
}

// printMetrics prints the etcd_backup_ series of an exposition.
func printMetrics(r io.ReadCloser, err error) error {
	if err != nil {
		return err
	}
	defer r.Close()
	s := bufio.NewScanner(r)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), "etcd_backup_") {
			fmt.Println("  " + s.Text())
		}
	}
	return s.Err()
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

func runTool(ctx context.Context, bin string, env []string, args ...string) error {
	fmt.Printf("$ etcd-backup %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return fmt.Errorf("etcd-backup %s: exit status %d", args[0], exit.ExitCode())
		}
		return err
	}
	return nil
}

func listDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			return err
		}
		fmt.Printf("  %s %10d  %s\n", fi.Mode(), fi.Size(), filepath.Join(dir, e.Name()))
	}
	return nil
}

func listResults(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		v, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		fmt.Printf("  %-24s %s\n", n, v)
	}
	return nil
}

// gcsRoundTrip uploads the backup to a local GCS emulator, lists it,
// downloads the latest into a new directory laid out for
// cluster-restore.sh, and verifies both copies.
func gcsRoundTrip(ctx context.Context, bin string, env []string, work, backupDir string) error {
	step("starting a GCS emulator (fake-gcs-server) on loopback")
	gcs, err := gcstest.Start(demoBucket)
	if err != nil {
		return err
	}
	defer gcs.Stop()
	fmt.Printf("  STORAGE_EMULATOR_HOST=%s\n", gcs.Host())
	env = append(env, "STORAGE_EMULATOR_HOST="+gcs.Host())
	dest := "gs://" + demoBucket + "/clusters"

	step("etcd-backup upload (backup.json last, CRC32C checked, nothing overwritten)")
	if err := runTool(ctx, bin, env, "upload", backupDir, dest); err != nil {
		return err
	}
	step("etcd-backup upload again: the same backup is already there, nothing is re-sent")
	if err := runTool(ctx, bin, env, "upload", backupDir, dest); err != nil {
		return err
	}
	step("etcd-backup list")
	if err := runTool(ctx, bin, env, "list", dest); err != nil {
		return err
	}
	step("etcd-backup verify of the uploaded backup, streamed from GCS")
	if err := runTool(ctx, bin, env, "verify", "--latest", dest); err != nil {
		return err
	}
	restoreDir := filepath.Join(work, "restore")
	step("etcd-backup download --latest: a directory cluster-restore.sh accepts")
	if err := runTool(ctx, bin, env, "download", "--latest", dest, restoreDir); err != nil {
		return err
	}
	if err := listDir(restoreDir); err != nil {
		return err
	}
	step("etcd-backup verify --restore of the downloaded copy")
	return runTool(ctx, bin, env, "verify", "--restore", restoreDir)
}

const demoBucket = "etcd-backups"

// registryRoundTrip pushes the backup, encrypted to a new age key, to an
// in-process OCI registry, lists it, verifies its stored bytes without the
// key, then downloads and decrypts it with the key and verifies the copy.
func registryRoundTrip(ctx context.Context, bin string, env []string, work, backupDir string) error {
	step("starting an OCI registry (CNCF distribution) on loopback")
	reg := ocitest.Serve(filepath.Join(work, "registry"))
	defer reg.Close()
	dest := "docker://" + reg.Host + "/etcd/backups"
	fmt.Printf("  %s (plain HTTP: --tls-verify=false)\n", dest)

	step("an age key pair, as age-keygen makes it on an administrator's workstation")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	key := filepath.Join(work, "etcd-backup.key")
	if err := os.WriteFile(key, []byte(id.String()+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Printf("  public key  %s (the only key the cluster sees)\n  private key %s (kept off the cluster)\n", id.Recipient(), key)

	step("etcd-backup upload --encrypt-to: each file encrypted as it streams, the manifest last")
	if err := runTool(ctx, bin, env, "upload", "--tls-verify=false", "--encrypt-to", id.Recipient().String(), backupDir, dest); err != nil {
		return err
	}
	step("etcd-backup list")
	if err := runTool(ctx, bin, env, "list", "--tls-verify=false", dest); err != nil {
		return err
	}
	step("etcd-backup verify --latest without the key: the stored bytes only")
	if err := runTool(ctx, bin, env, "verify", "--tls-verify=false", "--latest", dest); err != nil {
		return err
	}
	restoreDir := filepath.Join(work, "restore-registry")
	step("etcd-backup download --latest --identity: decrypted, checked, laid out for cluster-restore.sh")
	if err := runTool(ctx, bin, env, "download", "--tls-verify=false", "--latest", "--identity", key, dest, restoreDir); err != nil {
		return err
	}
	if err := listDir(restoreDir); err != nil {
		return err
	}
	step("etcd-backup verify --restore of the decrypted copy")
	return runTool(ctx, bin, env, "verify", "--restore", restoreDir)
}
