package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"
	"filippo.io/age"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
)

const benchBucket = "etcd-backup-bench"

// minRegistryRuns is the fewest measured rounds of the registry rows.
const minRegistryRuns = 5

// emulator is a Cloud Storage emulator in this process, which is not the
// one measured. It keeps objects on disk, so that a 1 GiB object costs no
// memory once it is written, but holds each upload whole in memory several
// times over while it stores it (see runner.keepHeap).
// Clients reach it through a joiner (see there).
type emulator struct {
	srv    *fakestorage.Server
	joiner *joiner
	client *storage.Client // a plain client with default settings, as anyone would write it
	host   string          // for $STORAGE_EMULATOR_HOST
}

// startEmulator keeps objects under dir/objects and upload chunks under
// dir/chunks.
func startEmulator(ctx context.Context, dir string) (_ *emulator, err error) {
	objects := filepath.Join(dir, "objects")
	if err := os.MkdirAll(objects, 0o700); err != nil {
		return nil, fmt.Errorf("create emulator storage: %w", err)
	}
	e := &emulator{}
	defer func() {
		if err != nil {
			e.stop()
		}
	}()
	e.srv, err = fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", StorageRoot: objects})
	if err != nil {
		return nil, fmt.Errorf("start Cloud Storage emulator: %w", err)
	}
	e.srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: benchBucket})
	var endpoint string
	if e.joiner, endpoint, err = startJoiner(e.srv.URL(), filepath.Join(dir, "chunks")); err != nil {
		return nil, err
	}
	e.host = strings.TrimPrefix(endpoint, "http://")
	// What the library itself does for $STORAGE_EMULATOR_HOST.
	e.client, err = storage.NewClient(ctx, option.WithEndpoint(endpoint+"/storage/v1/"), option.WithoutAuthentication())
	if err != nil {
		return nil, fmt.Errorf("connect to the emulator: %w", err)
	}
	return e, nil
}

func (e *emulator) stop() {
	if e.client != nil {
		e.client.Close()
	}
	if e.joiner != nil {
		e.joiner.close()
	}
	if e.srv != nil {
		e.srv.Stop()
	}
}

// write sends the file at path as one object through one storage.Writer
// with default settings and returns the wall time.
func (e *emulator) write(ctx context.Context, path, object string) (time.Duration, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	// Cancelling the Writer's context is how it is abandoned.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := e.client.Bucket(benchBucket).Object(object).NewWriter(ctx)
	if _, err := io.Copy(w, f); err != nil {
		return 0, fmt.Errorf("write %s to the emulator: %w", object, err)
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("write %s to the emulator: %w", object, err)
	}
	return time.Since(start), nil
}

// took is how the upload of the file at path below prefix split its time.
func (e *emulator) took(prefix, path string) (handover, error) {
	h, ok := e.joiner.took(prefix, filepath.Base(path))
	if !ok {
		return handover{}, fmt.Errorf("the upload joiner saw no upload of %s below %s", filepath.Base(path), prefix)
	}
	return h, nil
}

// removeAll deletes every object under prefix, to keep the emulator's disk
// use at one backup.
func (e *emulator) removeAll(ctx context.Context, prefix string) error {
	b := e.client.Bucket(benchBucket)
	it := b.Objects(ctx, &storage.Query{Prefix: prefix})
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %s in the emulator: %w", prefix, err)
		}
		if err := b.Object(attrs.Name).Delete(ctx); err != nil {
			return fmt.Errorf("delete %s in the emulator: %w", attrs.Name, err)
		}
	}
}

// uploadResult is everything measured about upload at one database size.
type uploadResult struct {
	bytes     int64 // all files of the backup
	snapBytes int64 // the snapshot, which the plain Writer sends
	upload    []usage
	encrypted []usage // upload --encrypt-to, to one age key
	writer    []time.Duration
	// How the snapshot's time split in each run (timed at the joiner).
	uploadTook, encryptedTook, writerTook []handover
	endToEnd                              []usage // save, then upload of what it saved
	registry                              *registryResult
}

// hasUpload tells whether bin has the upload command.
func hasUpload(ctx context.Context, bin string) bool {
	_, err := runQuiet(ctx, "", nil, bin, "upload", "--help")
	return err == nil
}

// benchUpload takes one backup, then rotates `etcd-backup upload` of it,
// the same encrypted to an age key, and one plain storage.Writer of its
// snapshot, each going first in turn;
// then it runs save followed by upload in a fresh directory, as a Task's two
// steps run. Those come last because a save makes the runtime hand memory
// back (see keepHeap), which would slow down whatever follows it.
func (r *runner) benchUpload(ctx context.Context, size int64, runs int) (*uploadResult, error) {
	src := filepath.Join(r.scratch, "upload-source")
	if err := os.Mkdir(src, 0o700); err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	defer os.RemoveAll(src)
	logf("%s: one save to upload from", mib(size))
	o, err := r.save(ctx, src, nil)
	if err != nil {
		return nil, err
	}
	backup := filepath.Dir(o.snapshot)
	fi, err := os.Stat(o.snapshot)
	if err != nil {
		return nil, err
	}
	res := &uploadResult{snapBytes: fi.Size()}
	if res.bytes, err = dirBytes(backup); err != nil {
		return nil, err
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	encryptTo := []string{"--encrypt-to", id.Recipient().String()}
	defer r.keepHeap()()
	// One write warms up the emulator and faults in the heap it needs.
	logf("%s storage.Writer: warm-up", mib(size))
	if _, _, err := r.writeOnce(ctx, backup, o.snapshot); err != nil {
		return nil, err
	}
	for round := 1; round <= runs; round++ {
		logf("%s upload, encrypted upload and storage.Writer: run %d of %d", mib(size), round, runs)
		var u, enc usage
		var w time.Duration
		var ut, et, wt handover
		for i := range 3 {
			switch (i + round) % 3 {
			case 0:
				u, ut, err = r.upload(ctx, backup)
			case 1:
				enc, et, err = r.upload(ctx, backup, encryptTo...)
			default:
				w, wt, err = r.writeOnce(ctx, backup, o.snapshot)
			}
			if err != nil {
				return nil, err
			}
		}
		res.upload, res.encrypted, res.writer = append(res.upload, u), append(res.encrypted, enc), append(res.writer, w)
		res.uploadTook, res.encryptedTook, res.writerTook = append(res.uploadTook, ut), append(res.encryptedTook, et), append(res.writerTook, wt)
	}
	if r.reg != nil {
		// A registry round takes seconds, not a minute: more of them
		// steady the median.
		if res.registry, err = r.benchRegistry(ctx, r.reg, backup, o.snapshot, size, max(runs, minRegistryRuns)); err != nil {
			return nil, err
		}
	}
	for round := 1; round <= runs; round++ {
		logf("%s save then upload: run %d of %d", mib(size), round, runs)
		e2e, err := r.saveThenUpload(ctx)
		if err != nil {
			return nil, err
		}
		res.endToEnd = append(res.endToEnd, e2e)
	}
	return res, nil
}

// cached reads the files of the backup in dir, so that the measurement that
// follows finds them in the page cache whatever ran before it.
func cached(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", e.Name(), err)
		}
	}
	return nil
}

// upload runs `etcd-backup upload` of dir, with the extra flags, to a
// fresh prefix, then empties it.
func (r *runner) upload(ctx context.Context, dir string, extra ...string) (usage, handover, error) {
	r.seq++
	prefix := "upload-" + strconv.Itoa(r.seq)
	cmd := command{
		path: r.bin,
		args: append(append([]string{"upload", "--log-format", "json"}, extra...), dir, "gs://"+benchBucket+"/"+prefix),
		env:  append(slices.Clone(r.env), "STORAGE_EMULATOR_HOST="+r.emu.host),
	}
	snaps, err := filepath.Glob(filepath.Join(dir, "snapshot_*.db"))
	if err != nil || len(snaps) != 1 {
		return usage{}, handover{}, fmt.Errorf("no single snapshot in %s", dir)
	}
	var out bytes.Buffer
	if err := cached(dir); err != nil {
		return usage{}, handover{}, err
	}
	r.settle()
	u, err := measure(ctx, cmd, &out)
	if err != nil {
		return usage{}, handover{}, err
	}
	took, err := r.emu.took(prefix+"/", snaps[0])
	if err != nil {
		return usage{}, handover{}, err
	}
	return u, took, r.emu.removeAll(ctx, prefix+"/")
}

// writeOnce sends the file at path, in the backup in dir, with one plain
// storage.Writer.
func (r *runner) writeOnce(ctx context.Context, dir, path string) (time.Duration, handover, error) {
	r.seq++
	prefix := "writer-" + strconv.Itoa(r.seq) + "/"
	if err := cached(dir); err != nil {
		return 0, handover{}, err
	}
	r.settle()
	d, err := r.emu.write(ctx, path, prefix+filepath.Base(path))
	if err != nil {
		return 0, handover{}, err
	}
	took, err := r.emu.took(prefix, path)
	if err != nil {
		return 0, handover{}, err
	}
	return d, took, r.emu.removeAll(ctx, prefix)
}

func (r *runner) saveThenUpload(ctx context.Context) (usage, error) {
	r.seq++
	dir := filepath.Join(r.scratch, strconv.Itoa(r.seq))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return usage{}, fmt.Errorf("create run directory: %w", err)
	}
	defer os.RemoveAll(dir)
	s, err := r.save(ctx, dir, nil)
	if err != nil {
		return usage{}, err
	}
	u, _, err := r.upload(ctx, filepath.Dir(s.snapshot))
	if err != nil {
		return usage{}, err
	}
	return s.usage.add(u), nil
}

// dirBytes is the size of the regular files directly in dir.
func dirBytes(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			return 0, err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n, nil
}
