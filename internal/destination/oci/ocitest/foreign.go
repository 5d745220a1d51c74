package ocitest

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"
)

// PushForeign pushes, straight through containers/image, an artifact of
// another tool to ref.
func PushForeign(t testing.TB, ref types.ImageReference, sys *types.SystemContext) {
	t.Helper()
	ctx := t.Context()
	dst, err := ref.NewImageDestination(ctx, sys)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	blobs := [][]byte{[]byte("{}"), []byte("not a backup")}
	var descs []imgspecv1.Descriptor
	for i, b := range blobs {
		info := types.BlobInfo{Digest: digest.FromBytes(b), Size: int64(len(b))}
		if _, err := dst.PutBlob(ctx, bytes.NewReader(b), info, none.NoCache, i == 0); err != nil {
			t.Fatal(err)
		}
		descs = append(descs, imgspecv1.Descriptor{Digest: info.Digest, Size: info.Size})
	}
	descs[0].MediaType = imgspecv1.MediaTypeEmptyJSON
	descs[1].MediaType = "application/vnd.example.other.layer"
	m, err := json.Marshal(imgspecv1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageManifest,
		ArtifactType: "application/vnd.example.other", Config: descs[0], Layers: descs[1:],
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.PutManifest(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	if err := dst.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
}
