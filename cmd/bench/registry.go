package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"

	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
)

// registryResult is upload to the in-process registry, against one plain
// containers/image PutBlob of the snapshot to the same registry.
type registryResult struct {
	upload  []usage
	putBlob []time.Duration
}

// benchRegistry alternates `etcd-backup upload` of the backup in dir to a
// fresh repository of the registry with one PutBlob of its snapshot to
// another fresh repository, each going first in turn. Fresh repositories,
// so that neither finds the blob there already.
func (r *runner) benchRegistry(ctx context.Context, reg *ocitest.Registry, dir, snapshot string, size int64, runs int) (*registryResult, error) {
	res := &registryResult{}
	logf("%s PutBlob to the registry: warm-up", mib(size))
	if _, err := r.putBlob(ctx, reg, dir, snapshot); err != nil {
		return nil, err
	}
	for round := 1; round <= runs; round++ {
		logf("%s upload and PutBlob to the registry: run %d of %d", mib(size), round, runs)
		var u usage
		var p time.Duration
		var err error
		for i := range 2 {
			if (i+round)%2 == 0 {
				u, err = r.registryUpload(ctx, reg, dir)
			} else {
				p, err = r.putBlob(ctx, reg, dir, snapshot)
			}
			if err != nil {
				return nil, err
			}
		}
		res.upload, res.putBlob = append(res.upload, u), append(res.putBlob, p)
	}
	return res, nil
}

func (r *runner) registryUpload(ctx context.Context, reg *ocitest.Registry, dir string) (usage, error) {
	r.seq++
	cmd := command{
		path: r.bin,
		args: []string{"upload", "--log-format", "json", "--tls-verify=false", dir, "docker://" + reg.Host + "/bench/upload-" + strconv.Itoa(r.seq)},
		env:  slices.Clone(r.env),
	}
	if err := cached(dir); err != nil {
		return usage{}, err
	}
	r.settle()
	var out bytes.Buffer
	return measure(ctx, cmd, &out)
}

// putBlob sends the snapshot as one blob, as anyone would with
// containers/image: its digest computed as it goes, nothing checked.
func (r *runner) putBlob(ctx context.Context, reg *ocitest.Registry, dir, snapshot string) (time.Duration, error) {
	r.seq++
	ref, err := docker.ParseReference("//" + reg.Host + "/bench/putblob-" + strconv.Itoa(r.seq) + ":latest")
	if err != nil {
		return 0, err
	}
	if err := cached(dir); err != nil {
		return 0, err
	}
	r.settle()
	start := time.Now()
	sys := &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue, BlobInfoCacheDir: r.scratch}
	dst, err := ref.NewImageDestination(ctx, sys)
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	f, err := os.Open(snapshot)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if _, err := dst.PutBlob(ctx, f, types.BlobInfo{Size: fi.Size()}, none.NoCache, false); err != nil {
		return 0, fmt.Errorf("PutBlob of %s: %w", snapshot, err)
	}
	return time.Since(start), nil
}
