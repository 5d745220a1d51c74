package zzdeps

import (
	_ "filippo.io/age"
	_ "filippo.io/age/agessh"
	_ "github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/push"
	_ "github.com/prometheus/common/expfmt"
	_ "go.podman.io/image/v5/copy"
	_ "go.podman.io/image/v5/directory"
	_ "go.podman.io/image/v5/docker"
	_ "go.podman.io/image/v5/docker/reference"
	_ "go.podman.io/image/v5/manifest"
	_ "go.podman.io/image/v5/oci/layout"
	_ "go.podman.io/image/v5/pkg/blobinfocache/none"
	_ "go.podman.io/image/v5/signature"
	_ "go.podman.io/image/v5/types"
	_ "golang.org/x/crypto/bcrypt"
)
