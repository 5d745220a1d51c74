package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/snapshot/snapshottest"
	"github.com/etcd-backup/etcd-backup/internal/testcluster"
)

// TestCheckDamagedReferences checks the two damaged page references that
// crashed the process: walking the cycle overflowed the stack every time,
// and bbolt's check of the shared page died in a goroutine of its own about
// three runs in four. The trailer matches, as it does when the member's own
// database is damaged.
func TestCheckDamagedReferences(t *testing.T) {
	fx := realSnapshot(t)
	data, err := os.ReadFile(fx.path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		damage snapshottest.Damage
	}{
		{name: "bucket root is the root bucket's page", damage: snapshottest.Cycle},
		{name: "bucket root is a leaf of the key bucket", damage: snapshottest.SharedPage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			damaged := append([]byte(nil), data...)
			if err := snapshottest.Apply(damaged, tt.damage); err != nil {
				t.Fatal(err)
			}
			path := writeFile(t, "damaged.db", damaged)
			if _, err := verifyFile(path); err != nil {
				t.Fatalf("verifyFile() error = %v; the trailer must match the damage", err)
			}
			_, err := Check(t.Context(), path)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Check() error = %v, want %v", err, ErrCorrupt)
			}
			t.Log(err)
			// bbolt's own check, which Check runs only on a file whose
			// pages form a tree, must not take this process down either.
			err = checkInChild(t.Context(), path)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("checkInChild() error = %v, want %v", err, ErrCorrupt)
			}
			t.Log(err)
		})
	}
}

func TestCheckInChildCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := checkInChild(ctx, writeFile(t, "any.db", nil)); !errors.Is(err, context.Canceled) {
		t.Errorf("checkInChild() error = %v, want %v", err, context.Canceled)
	}
}

// TestCheckInChildStarved: a child killed for want of memory (SIGKILL from
// the out-of-memory killer) is not a corrupt snapshot: save would delete a
// good backup, and verify call it unusable.
func TestCheckInChildStarved(t *testing.T) {
	t.Setenv(killChildEnv, "1")
	err := checkInChild(t.Context(), realSnapshot(t).path)
	if err == nil || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "for want of memory") {
		t.Errorf("checkInChild() error = %v, want one that is not %v and says the check wanted memory", err, ErrCorrupt)
	}
}

// FuzzCheck overwrites bytes of a page of a small real snapshot, recomputes
// the trailer, and checks that Check neither crashes nor hangs nor fails
// for any other reason than the database being corrupt. The seeds run under
// plain go test.
func FuzzCheck(f *testing.F) {
	data, pageSize := fuzzBase(f)
	pages := (len(data) - sha256.Size) / pageSize
	for _, d := range []snapshottest.Damage{snapshottest.Cycle, snapshottest.SharedPage} {
		damaged := append([]byte(nil), data...)
		if err := snapshottest.Apply(damaged, d); err != nil {
			f.Fatal(err)
		}
		// The seed is the changed bytes at their place.
		for i := range damaged {
			if damaged[i] != data[i] && i < len(data)-sha256.Size {
				f.Add(uint32(i/pageSize), uint16(i%pageSize), damaged[i:i+8])
				break
			}
		}
	}
	last := uint32(pages - 1)
	f.Add(uint32(0), uint16(16), []byte{0xff})          // a meta page's magic
	f.Add(uint32(2), uint16(8), []byte{0xff, 0xff})     // a page's type
	f.Add(last, uint16(10), []byte{0xff, 0xff})         // a page's element count
	f.Add(last, uint16(12), []byte{0xff, 0xff, 0, 0})   // a page's overflow
	f.Add(last, uint16(16+4), []byte{0xff, 0xff, 0, 0}) // an element's position
	f.Add(last, uint16(0), make([]byte, pageSize))      // a page of zeros

	f.Fuzz(func(t *testing.T, page uint32, off uint16, patch []byte) {
		damaged := append([]byte(nil), data...)
		db := damaged[:len(damaged)-sha256.Size]
		at := int(page%uint32(pages))*pageSize + int(off)%pageSize
		copy(db[at:], patch)
		sum := sha256.Sum256(db)
		copy(damaged[len(db):], sum[:])
		if _, err := Check(t.Context(), writeFile(t, "fuzz.db", damaged)); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Check() error = %v, want nil or %v", err, ErrCorrupt)
		}
	})
}

// fuzzBase returns a snapshot of a member with a few keys, and its page size.
func fuzzBase(f *testing.F) ([]byte, int) {
	c := testcluster.New(f, testcluster.Options{Keys: 20})
	cli, err := c.Client(f.Context())
	if err != nil {
		f.Fatal(err)
	}
	defer cli.Close()
	path, _, _ := save(f, cli)
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	// bbolt records its page size in the meta page, after the page header,
	// the magic and the version.
	return data, int(binary.NativeEndian.Uint32(data[16+8:]))
}
