package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/version"
)

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print version, commit, Go and etcd client versions",
		setup: func(fs *pflag.FlagSet) runFunc {
			output := fs.String("output", "text", "output format: text or json")
			return func(_ context.Context, env *env, _ []string) error {
				v := version.Get()
				switch *output {
				case "json":
					return json.NewEncoder(env.stdout).Encode(v)
				case "text":
					_, err := fmt.Fprintf(env.stdout, "etcd-backup %s\ncommit: %s\ngo: %s\netcd client: %s\n", v.Version, v.Commit, v.Go, v.EtcdClient)
					return err
				}
				return usage("--output %q: want text or json", *output)
			}
		},
	}
}
