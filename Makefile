# etcd-backup: build, test, lint, demo, bench, image.
GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
# Once, not at every use: a build and the image it goes into agree.
VERSION   := $(VERSION)
COMMIT    := $(COMMIT)
PKG       := github.com/etcd-backup/etcd-backup
# containers_image_openpgp: containers/image verifies signatures in Go, not
# through gpgme (cgo). disable_grpc_modules: Cloud Storage is reached over its
# JSON API; without the gRPC client and its DirectPath/xDS and telemetry
# modules the binary is a third smaller and starts a quarter faster.
TAGS      := containers_image_openpgp disable_grpc_modules
LDFLAGS   := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)
export CGO_ENABLED := 0

.PHONY: all build test race lint demo bench image image-context image-test clean

all: build

build:
	$(GO) build -tags '$(TAGS)' -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/etcd-backup ./cmd/etcd-backup

# The tests start real servers on loopback: etcd with mutual TLS, a GCS
# emulator, an OCI registry. -race needs cgo.
test:
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -race -timeout 20m ./...

# staticcheck, pinned, run from the module proxy: it also finds what the
# libraries deprecate, which a later version of them may take away.
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet -tags '$(TAGS)' ./...
	$(GO) vet -tags '$(TAGS) imagetest' ./internal/imagetest
	$(GO) run $(STATICCHECK) -tags '$(TAGS)' ./...
	$(GO) run $(STATICCHECK) -tags '$(TAGS) imagetest' ./internal/imagetest

# A local etcd on a generated OpenShift-like host tree, a local GCS
# emulator, then the real save, verify and upload.
# KEEP=1 keeps the demo's directory (etcd data, the backup, the download).
demo: build
	$(GO) run -tags '$(TAGS)' ./cmd/demo -bin $(BIN)/etcd-backup $(if $(filter 1,$(KEEP)),-keep)

bench: build
	$(GO) run -tags '$(TAGS)' ./cmd/bench -bin $(BIN)/etcd-backup $(BENCH_FLAGS)

clean:
	rm -rf $(BIN)

# A multi-arch image (a manifest list for linux/amd64 and linux/arm64),
# built offline: the binary is cross-compiled here with the local Go and the
# Containerfile copies it onto scratch, so nothing is pulled and nothing runs
# under emulation. buildah with vfs storage and chroot isolation works as
# root on a machine with no container daemon. Push it with
# `buildah manifest push --all $(IMAGE) docker://HOST/REPO:TAG`.
IMAGE      ?= localhost/etcd-backup:$(VERSION)
ARCHES     ?= amd64 arm64
CA_BUNDLE  ?= /etc/ssl/certs/ca-certificates.crt
BUILDAH_BIN ?= $(or $(shell command -v buildah),$(shell command -v podman))
BUILDAH    ?= $(BUILDAH_BIN) --storage-driver vfs
CONTEXT    := $(BIN)/image

image-context:
	@test -r $(CA_BUNDLE) || { echo 'make image: no CA bundle at $(CA_BUNDLE) (apt-get install ca-certificates, or set CA_BUNDLE=/path/to/bundle.pem)' >&2; exit 1; }
	rm -rf $(CONTEXT)
	mkdir -p $(CONTEXT)/rootfs/etc/ssl/certs $(CONTEXT)/rootfs/tmp
	cp $(CA_BUNDLE) $(CONTEXT)/rootfs/etc/ssl/certs/ca-certificates.crt
	chmod 0644 $(CONTEXT)/rootfs/etc/ssl/certs/ca-certificates.crt
	chmod 1777 $(CONTEXT)/rootfs/tmp
	cp Containerfile $(CONTEXT)/Containerfile
	for arch in $(ARCHES); do \
		GOOS=linux GOARCH=$$arch $(GO) build -tags '$(TAGS)' -trimpath -ldflags '$(LDFLAGS)' \
			-o $(CONTEXT)/linux-$$arch/etcd-backup ./cmd/etcd-backup || exit 1; \
	done

image: image-context
	@test -n "$(BUILDAH_BIN)" || { echo 'make image: needs buildah or podman, and neither is installed (apt-get install buildah)' >&2; exit 1; }
	$(BUILDAH) manifest rm $(IMAGE) >/dev/null 2>&1 || true
	$(BUILDAH) build --isolation chroot --manifest $(IMAGE) \
		--platform $(subst $() ,$(comma),$(addprefix linux/,$(ARCHES))) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(COMMIT) \
		-f $(CONTEXT)/Containerfile $(CONTEXT)

# Builds the image, then runs the binary inside it: see internal/imagetest.
image-test:
	CGO_ENABLED=1 $(GO) test -tags '$(TAGS) imagetest' -count 1 -timeout 20m -v ./internal/imagetest/

comma := ,
