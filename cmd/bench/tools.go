package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const etcdctlPkg = "go.etcd.io/etcd/etcdctl/v3"

// etcdTools are the official binaries the script runs.
type etcdTools struct {
	version          string
	etcdctl, etcdutl string
}

// repoRoot is the directory of the main module's go.mod, found the way the
// go command finds it, so the bench runs from any directory of the checkout.
func repoRoot(ctx context.Context) (string, error) {
	gomod, err := runQuiet(ctx, "", nil, "go", "env", "GOMOD")
	if err != nil {
		return "", fmt.Errorf("find the repository root: %w", err)
	}
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the bench from inside the etcd-backup checkout")
	}
	return filepath.Dir(gomod), nil
}

// buildTools returns etcdctl and etcdutl at the version the throwaway module
// in toolsDir requires, building them into the user cache the first time.
func buildTools(ctx context.Context, toolsDir string) (etcdTools, error) {
	version, err := runQuiet(ctx, toolsDir, nil, "go", "list", "-m", "-f", "{{.Version}}", etcdctlPkg)
	if err != nil {
		return etcdTools{}, fmt.Errorf("read the etcd version of %s: %w", toolsDir, err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return etcdTools{}, fmt.Errorf("find a cache for the etcd tools: %w", err)
	}
	dir := filepath.Join(cache, "etcd-backup-bench", version)
	t := etcdTools{version: version, etcdctl: filepath.Join(dir, "etcdctl"), etcdutl: filepath.Join(dir, "etcdutl")}
	if err := buildCached(ctx, toolsDir, t.etcdctl, etcdctlPkg); err != nil {
		return etcdTools{}, err
	}
	if err := buildCached(ctx, toolsDir, t.etcdutl, "go.etcd.io/etcd/etcdutl/v3"); err != nil {
		return etcdTools{}, err
	}
	return t, nil
}

// buildCached builds pkg into bin unless bin exists. It builds beside bin
// and renames, so an interrupted build never leaves a broken binary cached.
func buildCached(ctx context.Context, toolsDir, bin, pkg string) error {
	if _, err := os.Stat(bin); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o700); err != nil {
		return fmt.Errorf("create tool cache: %w", err)
	}
	logf("building official %s into %s (a few minutes the first time)", filepath.Base(bin), filepath.Dir(bin))
	tmp := bin + ".tmp"
	if _, err := runQuiet(ctx, toolsDir, nil, "go", "build", "-trimpath", "-o", tmp, pkg); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	return os.Rename(tmp, bin)
}
