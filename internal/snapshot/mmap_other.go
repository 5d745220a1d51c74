//go:build !linux

package snapshot

const mmapFlags = 0
