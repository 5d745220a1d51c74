// Package version holds the build's identity, stamped at link time:
//
//	go build -ldflags "-X github.com/etcd-backup/etcd-backup/internal/version.Version=v1.2.3 -X ...Commit=abc123"
package version

import (
	"runtime"
	"runtime/debug"

	clientversion "go.etcd.io/etcd/api/v3/version"
)

// Stamped by the linker; the defaults mark a development build.
var (
	Version = "dev"
	Commit  = ""
)

// Info is what `etcd-backup version` prints.
type Info struct {
	Version    string `json:"version"`
	Commit     string `json:"commit"`
	Go         string `json:"go"`
	EtcdClient string `json:"etcdClient"`
}

// Get returns the build's identity. Without a stamped commit it falls back to
// the VCS revision the Go toolchain recorded, if any.
func Get() Info {
	commit := Commit
	if commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					commit = s.Value
				}
			}
		}
	}
	return Info{Version: Version, Commit: commit, Go: runtime.Version(), EtcdClient: clientversion.Version}
}
