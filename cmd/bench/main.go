// Command bench measures etcd-backup against what it replaces, on one real
// etcd member filled to each requested size: `etcd-backup save` against bare
// `etcdctl snapshot save` and against cluster-backup.sh's pipeline
// (`tar -czpf`, `etcdctl snapshot save`, `etcdutl snapshot status`), run in
// turn on the same server and database, with wall time, throughput, peak RSS
// and peak anonymous memory; then `etcd-backup upload` to a Cloud Storage
// emulator against one plain storage.Writer, and save followed by upload;
// then a verdict per target of SPEC section 10. etcdctl and etcdutl are the
// official builds, made from the throwaway module in cmd/bench/tools.
// `make bench` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// config is what the flags set.
type config struct {
	sizes []int64
	runs  int
	// uploadRuns is separate because the emulator takes over a minute per
	// GiB: it copies each object several times in memory.
	uploadRuns int
	keep       bool
	bin        string
	work       string
}

func main() {
	var cfg config
	sizes := flag.String("sizes", "256MiB,1GiB", "comma-separated database sizes to fill etcd to, in ascending order")
	flag.IntVar(&cfg.runs, "runs", 3, "measured runs of each save contender per size (after one warm-up run each)")
	flag.IntVar(&cfg.uploadRuns, "upload-runs", 1, "measured runs of each upload contender per size (0: no upload rows)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the scratch directory (etcd data, host tree, the last outputs)")
	flag.StringVar(&cfg.bin, "bin", "", "etcd-backup binary to measure (default: build one from this checkout)")
	flag.StringVar(&cfg.work, "work", "", "where to create the scratch directory (default: the system temp dir; not a tmpfs; needs 8 times the largest size free)")
	flag.Parse()
	var err error
	if cfg.sizes, err = parseSizes(*sizes); err == nil && (cfg.runs < 1 || cfg.uploadRuns < 0) {
		err = fmt.Errorf("-runs %d, -upload-runs %d: want at least 1 and 0", cfg.runs, cfg.uploadRuns)
	}
	if err != nil || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench: bad arguments:", errors.Join(err, extraArgs(flag.Args())))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func extraArgs(args []string) error {
	if len(args) == 0 {
		return nil
	}
	return fmt.Errorf("unexpected arguments %q", args)
}

func run(ctx context.Context, cfg config) error {
	root, err := repoRoot(ctx)
	if err != nil {
		return err
	}
	tools, err := buildTools(ctx, filepath.Join(root, "cmd", "bench", "tools"))
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(cfg.work, "etcd-backup-bench-*")
	if err != nil {
		return fmt.Errorf("create scratch directory: %w", err)
	}
	if cfg.keep {
		defer logf("kept %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	if err := checkDisk(work, slices.Max(cfg.sizes)); err != nil {
		return err
	}
	bin, err := etcdBackupBinary(ctx, root, work, cfg.bin)
	if err != nil {
		return err
	}
	printFacts(ctx, bin, tools)

	logf("starting etcd with mutual TLS on a generated OpenShift host tree in %s", work)
	c, err := testcluster.Start(ctx, filepath.Join(work, "cluster"), testcluster.Options{})
	if err != nil {
		return err
	}
	defer c.Stop()
	r, err := newRunner(ctx, c, tools, bin, filepath.Join(work, "runs"))
	if err != nil {
		return err
	}
	defer r.close()
	switch {
	case cfg.uploadRuns == 0:
	case hasUpload(ctx, bin):
		if err := checkMemory(slices.Max(cfg.sizes)); err != nil {
			return err
		}
		if r.emu, err = startEmulator(ctx, filepath.Join(work, "gcs")); err != nil {
			return err
		}
		defer r.emu.stop()
		r.reg = ocitest.Serve(filepath.Join(work, "registry"))
		defer r.reg.Close()
	default:
		logf("%s has no upload command: no upload rows", bin)
	}

	var v verdicts
	var all []sizeResult
	for _, size := range cfg.sizes {
		res, err := r.benchSize(ctx, size, cfg.runs)
		if err != nil {
			return err
		}
		if r.emu != nil {
			if res.upload, err = r.benchUpload(ctx, size, cfg.uploadRuns); err != nil {
				return err
			}
		}
		printSize(res, &v)
		all = append(all, res)
	}
	printFlatness(all, &v)
	v.summary()
	return nil
}

// etcdBackupBinary returns the binary to measure: the one given, or a fresh
// build of this checkout with the release tags.
func etcdBackupBinary(ctx context.Context, root, work, given string) (string, error) {
	if given != "" {
		bin, err := filepath.Abs(given)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("etcd-backup binary: %w (run `make build` first)", err)
		}
		return bin, nil
	}
	bin := filepath.Join(work, "etcd-backup")
	logf("building etcd-backup")
	if _, err := runQuiet(ctx, root, nil, "go", "build", "-tags", "containers_image_openpgp disable_grpc_modules", "-trimpath", "-o", bin, "./cmd/etcd-backup"); err != nil {
		return "", fmt.Errorf("build etcd-backup: %w", err)
	}
	return bin, nil
}

// checkDisk refuses to start without room for, each about the size of the
// database: etcd's data and its WAL, the backup uploads are made from, the
// backup of the run in progress, the emulator's copy of it and the chunks
// the joiner collects; and a margin.
func checkDisk(dir string, largest int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("free space in %s: %w", dir, err)
	}
	free, need := int64(st.Bavail)*st.Bsize, 8*largest
	if free < need {
		return fmt.Errorf("%s has %s free; a %s database needs %s (pass -work elsewhere or smaller -sizes)", dir, mib(free), mib(largest), mib(need))
	}
	if st.Type == unix.TMPFS_MAGIC {
		return fmt.Errorf("%s is a tmpfs: snapshots would be written to memory; pass -work on a disk", dir)
	}
	return nil
}

// checkMemory makes sure the emulator's heap (see runner.keepHeap) fits.
func checkMemory(largest int64) error {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return fmt.Errorf("read free memory: %w", err)
	}
	for line := range strings.Lines(string(data)) {
		kib, ok := strings.CutPrefix(line, "MemAvailable:")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kib), "kB")), 10, 64)
		if err != nil {
			return fmt.Errorf("read free memory: %q: %w", line, err)
		}
		if avail, need := n<<10, heapPerByte*largest; avail < need {
			return fmt.Errorf("%s of memory available; the emulator's uploads of a %s database need %s (pass -upload-runs 0 or smaller -sizes)", mib(avail), mib(largest), mib(need))
		}
		return nil
	}
	return errors.New("read free memory: no MemAvailable in /proc/meminfo")
}

// parseSizes reads "256MiB,1GiB" (binary units KiB, MiB, GiB, or bytes).
func parseSizes(s string) ([]int64, error) {
	var sizes []int64
	for f := range strings.SplitSeq(s, ",") {
		n, err := parseSize(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		sizes = append(sizes, n)
	}
	if !slices.IsSorted(sizes) {
		return nil, fmt.Errorf("-sizes %s: give them in ascending order (the database only grows)", s)
	}
	return sizes, nil
}

func parseSize(arg string) (int64, error) {
	s, mult := arg, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional KiB, MiB or GiB suffix", arg)
	}
	return n * mult, nil
}

// logf reports what the bench is doing on stderr; the tables go to stdout.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
