# etcd-backup: build, test, lint, demo, bench, image.
GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
PKG       := github.com/etcd-backup/etcd-backup
TAGS      := containers_image_openpgp
LDFLAGS   := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)
export CGO_ENABLED := 0

.PHONY: all build test race lint demo bench image clean

all: build

build:
	$(GO) build -tags '$(TAGS)' -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/etcd-backup ./cmd/etcd-backup

# The tests start real servers on loopback: etcd with mutual TLS, a GCS
# emulator, an OCI registry. -race needs cgo.
test:
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -race -timeout 20m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet -tags '$(TAGS)' ./...

# A local etcd on a generated OpenShift-like host tree, a local GCS
# emulator, then the real save, verify and upload.
# KEEP=1 keeps the demo's directory (etcd data, the backup, the download).
demo: build
	$(GO) run -tags '$(TAGS)' ./cmd/demo -bin $(BIN)/etcd-backup $(if $(filter 1,$(KEEP)),-keep)

bench: build
	$(GO) run -tags '$(TAGS)' ./cmd/bench -bin $(BIN)/etcd-backup $(BENCH_FLAGS)

clean:
	rm -rf $(BIN)

# A multi-arch image (a manifest list for linux/amd64 and linux/arm64) with
# podman or buildah; the Containerfile cross-compiles, so no emulation is
# needed. Push it with `podman manifest push $(IMAGE) docker://...`.
IMAGE      ?= etcd-backup:$(VERSION)
PLATFORMS  ?= linux/amd64,linux/arm64
CONTAINERS ?= $(shell command -v podman || command -v buildah)

image:
	@test -n "$(CONTAINERS)" || { echo 'make image: needs podman or buildah, and neither is installed (install one, e.g. apt-get install podman or dnf install podman; or set CONTAINERS=/path/to/podman)' >&2; exit 1; }
	$(CONTAINERS) manifest rm $(IMAGE) >/dev/null 2>&1 || true
	$(CONTAINERS) build --platform $(PLATFORMS) --manifest $(IMAGE) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(COMMIT) \
		-f Containerfile .
