package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"google.golang.org/protobuf/encoding/protowire"
)

// ErrCorrupt means a file is not a sound etcd database: bbolt finds it
// inconsistent, it is shorter than its own pages say, or etcd's buckets or
// records are missing or malformed.
var ErrCorrupt = errors.New("snapshot database is corrupt")

// Status is what Check reads from a snapshot's database.
type Status struct {
	// Revision is the store revision: the main revision of the newest entry
	// in the key bucket, as `etcdutl snapshot status` reports it.
	Revision int64
	// CompactRevision is the last finished compaction (0 if none).
	CompactRevision int64
	// KeyCount is the number of keys that exist at Revision, as
	// `etcdutl snapshot status` (3.6 and later) reports totalKey and
	// `etcdctl get "" --prefix --count-only` would answer.
	KeyCount int64
	// StorageVersion is the storage schema version, empty before etcd 3.6.
	StorageVersion string
	// ConsistentIndex and Term are the last raft entry applied to the database.
	ConsistentIndex uint64
	Term            uint64
	// Size is the database size in bytes, without the trailer.
	Size int64
}

// openTimeout bounds the wait for bbolt's file lock, held only by a process
// that has the file open for writing.
const openTimeout = 5 * time.Second

// Check opens the snapshot at path read-only, as `etcdutl snapshot status`
// does, and checks it: the file holds every page the database claims, every
// page is reached once from the root (no cycle, no page shared), every page
// and key can be read in order, bbolt finds the pages and the free list
// consistent, and etcd's key and meta buckets are there. It returns what the
// database records. Errors wrap ErrCorrupt when the content is at fault.
//
// No content can end the process: bbolt's own check, which cannot be
// guarded, runs in a child process of this binary (see ServeChild).
func Check(ctx context.Context, path string) (Status, error) {
	st, err := check(ctx, path)
	if err != nil {
		return Status{}, fmt.Errorf("check snapshot %s: %w", path, err)
	}
	return st, nil
}

func check(ctx context.Context, path string) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	f, err := os.Open(path)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// Check names the path.
		return Status{}, fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	if err != nil {
		return Status{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Status{}, err
	}
	// bbolt would try to initialise an empty file.
	if fi.Size() == 0 {
		return Status{}, fmt.Errorf("%w: empty file", ErrCorrupt)
	}
	var db *bolt.DB
	err = guarded(func() (err error) {
		db, err = bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: openTimeout})
		return err
	})
	if err != nil {
		return Status{}, openError(err)
	}
	defer db.Close()
	tx, err := db.Begin(false)
	if err != nil {
		return Status{}, err
	}
	defer tx.Rollback()

	// Reading a page beyond the end of the file would fault.
	if tx.Size() > fi.Size() {
		return Status{}, fmt.Errorf("%w: %d bytes, but its pages need %d", ErrCorrupt, fi.Size(), tx.Size())
	}
	// bbolt's check, the longest part, runs alongside the rest; a problem
	// found here is the clearer report.
	childCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	checked := make(chan error, 1)
	go func() { checked <- checkInChild(childCtx, path) }()
	st, err := status(ctx, f, db, tx)
	if err != nil {
		cancel()
		<-checked
		return Status{}, err
	}
	if err := <-checked; err != nil {
		return Status{}, err
	}
	return st, nil
}

// status checks that the pages of db, read from f, form a tree, then
// reads etcd's records and walks every page and key, guarded.
func status(ctx context.Context, f *os.File, db *bolt.DB, tx *bolt.Tx) (Status, error) {
	// bbolt follows page references blindly: prove them a tree first.
	pageSize := db.Info().PageSize
	if err := checkPages(ctx, f, pageSize, uint64(tx.Size())/uint64(pageSize), uint64(tx.Cursor().Bucket().Root())); err != nil {
		return Status{}, err
	}
	var st Status
	if err := guarded(func() error { return readStatus(ctx, tx, &st) }); err != nil {
		return Status{}, err
	}
	var err error
	st.KeyCount, err = countKeys(ctx, tx.Bucket(schema.Key.Name()))
	return st, err
}

// openError marks the failures of bolt.Open that come from the file's
// content rather than from the system.
func openError(err error) error {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, berrors.ErrTimeout) || errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// guarded runs fn and turns a panic or a memory fault inside it into
// ErrCorrupt: bbolt panics on a page that is not what its parent says, and a
// damaged reference within a page can point outside the mapping.
func guarded(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
	}()
	return fn()
}

// readStatus reads etcd's records and walks every page and key of the
// database but the key bucket's, which countKeys walks, so that a damaged
// one fails here.
func readStatus(ctx context.Context, tx *bolt.Tx, st *Status) error {
	for _, b := range []backend.Bucket{schema.Key, schema.Meta} {
		if tx.Bucket(b.Name()) == nil {
			return fmt.Errorf("%w: no %q bucket", ErrCorrupt, b.Name())
		}
	}
	st.Size = tx.Size()
	r := reader{tx}
	st.ConsistentIndex, st.Term = schema.UnsafeReadConsistentIndex(r)
	if v := schema.ReadStorageVersionFromSnapshot(tx); v != nil {
		st.StorageVersion = v.String()
	}
	// mvcc panics on a malformed revision, as it should inside the server.
	st.CompactRevision, _ = mvcc.UnsafeReadFinishedCompact(r)
	if k, _ := tx.Bucket(schema.Key.Name()).Cursor().Last(); k != nil {
		st.Revision = mvcc.BytesToRev(k).Main
	}
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		if bytes.Equal(name, schema.Key.Name()) {
			return nil
		}
		return walk(ctx, b, nil)
	})
}

// ctxCheckEvery is how many entries walk reads between looks at ctx.
const ctxCheckEvery = 1 << 16

// walk calls fn, if not nil, on each entry of b in order, checking that keys
// strictly increase, and walks nested buckets.
func walk(ctx context.Context, b *bolt.Bucket, fn func(k, v []byte) error) error {
	var prev []byte
	c := b.Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if n++; n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return fmt.Errorf("%w: key %x follows %x", ErrCorrupt, k, prev)
		}
		prev = k
		if v == nil {
			if nested := b.Bucket(k); nested != nil {
				if err := walk(ctx, nested, nil); err != nil {
					return err
				}
				continue
			}
		}
		if fn != nil {
			if err := fn(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// countKeys counts the keys alive at the newest revision: the key bucket
// holds every revision since the last compaction, in order, each a put or a
// tombstone. Keys are tracked by a 64-bit fingerprint, not by name, so that
// memory stays a few bytes per key whatever the keys' length; two keys
// colliding, which would undercount by one, has a chance of about n²/2⁶⁵.
func countKeys(ctx context.Context, keys *bolt.Bucket) (int64, error) {
	seed := maphash.MakeSeed()
	live := make(map[uint64]struct{})
	err := guarded(func() error {
		return walk(ctx, keys, func(k, v []byte) error {
			key, err := kvKey(v)
			if err != nil {
				return fmt.Errorf("%w: key bucket entry %x: %w", ErrCorrupt, k, err)
			}
			fp := maphash.Bytes(seed, key)
			if mvcc.IsTombstone(k) {
				delete(live, fp)
			} else {
				live[fp] = struct{}{}
			}
			return nil
		})
	})
	return int64(len(live)), err
}

// kvKey returns the key of an encoded mvccpb.KeyValue without decoding the
// rest: unmarshalling would copy every value in the database.
func kvKey(kv []byte) ([]byte, error) {
	// mvccpb.KeyValue.key is field 1.
	const keyField = 1
	for len(kv) > 0 {
		num, typ, n := protowire.ConsumeTag(kv)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		kv = kv[n:]
		if num == keyField && typ == protowire.BytesType {
			key, n := protowire.ConsumeBytes(kv)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			return key, nil
		}
		n = protowire.ConsumeFieldValue(num, typ, kv)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		kv = kv[n:]
	}
	return nil, errors.New("record has no key")
}

// reader lets etcd's schema helpers read from a bbolt transaction, as they
// read from the server's backend.
type reader struct{ tx *bolt.Tx }

func (r reader) UnsafeRange(bucket backend.Bucket, key, endKey []byte, limit int64) (keys, vals [][]byte) {
	b := r.tx.Bucket(bucket.Name())
	if b == nil {
		return nil, nil
	}
	c := b.Cursor()
	if len(endKey) == 0 {
		if k, v := c.Seek(key); bytes.Equal(k, key) {
			return [][]byte{k}, [][]byte{v}
		}
		return nil, nil
	}
	for k, v := c.Seek(key); k != nil && bytes.Compare(k, endKey) < 0; k, v = c.Next() {
		if limit > 0 && int64(len(keys)) == limit {
			break
		}
		keys, vals = append(keys, k), append(vals, v)
	}
	return keys, vals
}

func (r reader) UnsafeForEach(bucket backend.Bucket, visitor func(k, v []byte) error) error {
	b := r.tx.Bucket(bucket.Name())
	if b == nil {
		return nil
	}
	return b.ForEach(visitor)
}
