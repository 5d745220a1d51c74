// Package snapshottest damages the structure of etcd snapshots for tests, in
// the ways that crash bbolt: the damage a member's own database can carry
// under a trailer that matches it.
package snapshottest

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Damage is one way to damage a snapshot's page references.
type Damage int

const (
	// Cycle points the alarm bucket's root at the root bucket's own page:
	// walking the buckets comes back to where it started.
	Cycle Damage = iota
	// SharedPage points the alarm bucket's root at the first leaf of the
	// key bucket: one page in two trees.
	SharedPage
)

// The bbolt layout, written in the machine's byte order.
const (
	pageHeader  = 16
	element     = 16
	metaRoot    = pageHeader + 16 // magic, version, page size, flags
	metaTxid    = metaRoot + 16 + 16
	leafFlag    = 0x02
	flagsOffset = 8
	countOffset = 10
)

var order = binary.NativeEndian

// Apply damages snapshot, a whole snapshot file with its trailer, and gives
// it a trailer that matches the damage.
func Apply(snapshot []byte, d Damage) error {
	db := snapshot[:len(snapshot)-sha256.Size]
	off, root, err := Locate(db, d)
	if err != nil {
		return err
	}
	order.PutUint64(db[off:], root)
	sum := sha256.Sum256(db)
	copy(snapshot[len(db):], sum[:])
	return nil
}

// Locate returns where d changes the bbolt database db: the offset of the
// alarm bucket's root reference, and the root it gets, as 8 bytes in the
// machine's order (see Put).
func Locate(db []byte, d Damage) (off int, root uint64, err error) {
	l, err := read(db)
	if err != nil {
		return 0, 0, err
	}
	if off, err = l.bucketValue(l.root, "alarm"); err != nil {
		return 0, 0, err
	}
	if d == Cycle {
		return off, l.root, nil
	}
	key, err := l.bucketValue(l.root, "key")
	if err != nil {
		return 0, 0, err
	}
	root, err = l.firstLeaf(order.Uint64(db[key:]))
	return off, root, err
}

// Put encodes a page reference as bbolt stores it.
func Put(b []byte, root uint64) { order.PutUint64(b, root) }

type layout struct {
	db       []byte
	pageSize int
	root     uint64
}

// read finds the page size and the root bucket's page in the newer meta page.
func read(db []byte) (layout, error) {
	if len(db) < 2*4096 {
		return layout{}, fmt.Errorf("%d bytes is no bbolt database", len(db))
	}
	l := layout{db: db, pageSize: int(order.Uint32(db[pageHeader+8:]))}
	meta := db[:l.pageSize]
	if other := db[l.pageSize:]; order.Uint64(other[metaTxid:]) > order.Uint64(meta[metaTxid:]) {
		meta = other
	}
	l.root = order.Uint64(meta[metaRoot:])
	return l, nil
}

func (l layout) page(id uint64) ([]byte, error) {
	off := int(id) * l.pageSize
	if id < 2 || off+l.pageSize > len(l.db) {
		return nil, fmt.Errorf("page %d is not in the database", id)
	}
	return l.db[off : off+l.pageSize], nil
}

// bucketValue returns the offset in the database of the value of the
// bucket entry name, a bucket header, in the leaf page id.
func (l layout) bucketValue(id uint64, name string) (int, error) {
	p, err := l.page(id)
	if err != nil {
		return 0, err
	}
	if order.Uint16(p[flagsOffset:]) != leafFlag {
		return 0, fmt.Errorf("page %d is not a leaf", id)
	}
	for i := range int(order.Uint16(p[countOffset:])) {
		e := pageHeader + i*element
		pos, ksize := int(order.Uint32(p[e+4:])), int(order.Uint32(p[e+8:]))
		if string(p[e+pos:e+pos+ksize]) == name {
			return int(id)*l.pageSize + e + pos + ksize, nil
		}
	}
	return 0, fmt.Errorf("page %d has no entry %q", id, name)
}

// firstLeaf follows the first child of each branch page from page id down.
func (l layout) firstLeaf(id uint64) (uint64, error) {
	// A real tree is a few levels deep.
	for range 64 {
		p, err := l.page(id)
		if err != nil {
			return 0, err
		}
		if order.Uint16(p[flagsOffset:]) == leafFlag {
			return id, nil
		}
		// A branch element's child page follows its pos and key size.
		id = order.Uint64(p[pageHeader+8:])
	}
	return 0, fmt.Errorf("no leaf below page %d", id)
}
