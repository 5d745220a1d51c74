// Package imagetest builds the task image with `make image` and runs the
// binary inside it with buildah, as a Tekton or Argo pod would. Its tests
// need the imagetest build tag: `make image-test` runs them (and CI does),
// `make test` does not.
package imagetest
