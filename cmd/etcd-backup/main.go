// Command etcd-backup backs up the etcd of an OpenShift (or Kubernetes)
// cluster and stores the backup off the cluster. It only parses flags and
// calls the packages under internal/.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/etcd-backup/etcd-backup/internal/snapshot"
)

func main() {
	// Before flags: this binary is also the child that runs bbolt's check.
	snapshot.ServeChild()
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		// A second signal kills at once: clean-up is best effort, not a hostage.
		signal.Stop(sigs)
		cancel(fmt.Errorf("interrupted by %s", sig))
	}()
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	cancel(nil)
	os.Exit(code)
}
