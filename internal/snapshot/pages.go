package snapshot

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
)

// The bbolt page layout, as bbolt writes it in the machine's byte order.
const (
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elementSize    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	bucketHeader   = 16 // root pgid u64, sequence u64; an inline bucket's page follows
	branchPage     = 0x01
	leafPage       = 0x02
	bucketEntry    = 0x01
)

// maxDepth bounds how deep page references and nested buckets go. The
// B+tree of a database of many GiB is a handful of levels deep and etcd
// nests no buckets: only a damaged reference comes near it.
const maxDepth = 64

var order = binary.NativeEndian

// pageTree walks the page references of a bbolt file from the root bucket
// down, reading the file rather than bbolt's mapping: bbolt follows a
// reference wherever it points, so a cycle makes it recurse or loop until
// the process dies, and a page shared by two trees makes its own check crash.
// Here every page must be a branch or a leaf, within the file, reached once,
// and hold its elements; bbolt may then walk the tree.
type pageTree struct {
	ctx      context.Context
	file     io.ReaderAt
	pageSize uint64
	// pages is the high water mark: the pages the meta page says exist.
	pages uint64
	// seen has a bit for each page reached.
	seen []uint64
	// bufs holds, per depth, the buffer that page's header and elements
	// are read into, kept for the next page at that depth.
	bufs   [maxDepth + 1][]byte
	walked int
}

// checkPages walks the tree of the root bucket whose root is page root.
func checkPages(ctx context.Context, file io.ReaderAt, pageSize int, pages, root uint64) error {
	t := &pageTree{ctx: ctx, file: file, pageSize: uint64(pageSize), pages: pages, seen: make([]uint64, (pages+63)/64)}
	return t.page(root, 0)
}

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, a...)...)
}

// page checks page id, reached at depth, and the pages below it.
func (t *pageTree) page(id uint64, depth int) error {
	if depth > maxDepth {
		return corrupt("pages nest more than %d deep", maxDepth)
	}
	if t.walked++; t.walked%ctxCheckEvery == 0 {
		if err := t.ctx.Err(); err != nil {
			return err
		}
	}
	// Pages 0 and 1 are the meta pages.
	if id < 2 || id >= t.pages {
		return corrupt("page %d is referenced, but the database has pages 2 to %d", id, t.pages-1)
	}
	// One read mostly serves the header, the elements and the values.
	head, err := t.read(depth, id*t.pageSize, t.pageSize)
	if err != nil {
		return err
	}
	gotID, flags := order.Uint64(head), order.Uint16(head[8:])
	count, overflow := uint64(order.Uint16(head[10:])), uint64(order.Uint32(head[12:]))
	if gotID != id {
		return corrupt("page %d says it is page %d", id, gotID)
	}
	if overflow >= t.pages-id {
		return corrupt("page %d runs %d pages past the end of the database", id, overflow)
	}
	for p := id; p <= id+overflow; p++ {
		if t.seen[p/64]&(1<<(p%64)) != 0 {
			return corrupt("page %d is referenced twice", p)
		}
		t.seen[p/64] |= 1 << (p % 64)
	}
	size := (overflow + 1) * t.pageSize
	if pageHeaderSize+count*elementSize > size {
		return corrupt("page %d holds %d elements, more than fit in %d bytes", id, count, size)
	}
	if n := pageHeaderSize + count*elementSize; n > t.pageSize {
		if head, err = t.read(depth, id*t.pageSize, n); err != nil {
			return err
		}
	}
	r := run{t: t, head: head, at: id * t.pageSize, size: size}
	switch flags {
	case branchPage:
		return t.branch(id, r, count, depth)
	case leafPage:
		return t.leaf(place{page: id}, r, count, depth)
	default:
		return corrupt("page %d has type %#x where a branch or leaf page belongs", id, flags)
	}
}

// read returns n bytes of the file at off, in the buffer kept for depth.
func (t *pageTree) read(depth int, off, n uint64) ([]byte, error) {
	if uint64(cap(t.bufs[depth])) < n {
		t.bufs[depth] = make([]byte, n)
	}
	buf := t.bufs[depth][:n]
	if _, err := t.file.ReadAt(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("read page at offset %d: %w", off, err)
	}
	return buf, nil
}

func (t *pageTree) branch(id uint64, r run, count uint64, depth int) error {
	if count == 0 {
		return corrupt("branch page %d is empty", id)
	}
	// The children are read into deeper buffers: r.head stays as it is.
	for i := range count {
		e := pageHeaderSize + i*elementSize
		pos, ksize := uint64(order.Uint32(r.head[e:])), uint64(order.Uint32(r.head[e+4:]))
		if e+pos+ksize > r.size {
			return corrupt("page %d: key %d lies outside the page", id, i)
		}
		if err := t.page(order.Uint64(r.head[e+8:]), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// leaf checks that the entries of a leaf page lie within it, and walks the
// buckets among them: those with a root page, and inline ones.
func (t *pageTree) leaf(where place, r run, count uint64, depth int) error {
	for i := range count {
		e := pageHeaderSize + i*elementSize
		flags := order.Uint32(r.head[e:])
		pos, ksize, vsize := uint64(order.Uint32(r.head[e+4:])), uint64(order.Uint32(r.head[e+8:])), uint64(order.Uint32(r.head[e+12:]))
		if e+pos+ksize+vsize > r.size {
			return corrupt("%s: entry %d lies outside the page", where, i)
		}
		if flags&bucketEntry == 0 {
			continue
		}
		if err := t.bucket(where, i, r, e+pos+ksize, vsize, depth); err != nil {
			return err
		}
	}
	return nil
}

// bucket walks the nested bucket stored as entry i of a leaf, whose value
// is vsize bytes at off.
func (t *pageTree) bucket(where place, i uint64, r run, off, vsize uint64, depth int) error {
	if vsize < bucketHeader {
		return corrupt("%s: bucket entry %d is %d bytes, less than a bucket header", where, i, vsize)
	}
	if depth >= maxDepth {
		return corrupt("buckets nest more than %d deep", maxDepth)
	}
	v, err := r.bytes(off, bucketHeader)
	if err != nil {
		return err
	}
	if root := order.Uint64(v); root != 0 {
		return t.page(root, depth+1)
	}
	// bbolt keeps a bucket inline only while it is a fraction of a page.
	if vsize > bucketHeader+t.pageSize {
		return corrupt("%s: inline bucket %d is %d bytes, more than a page", where, i, vsize)
	}
	if v, err = r.bytes(off, vsize); err != nil {
		return err
	}
	inline := v[bucketHeader:]
	if len(inline) < pageHeaderSize {
		return corrupt("%s: inline bucket %d has no page", where, i)
	}
	count := uint64(order.Uint16(inline[10:]))
	if flags := order.Uint16(inline[8:]); flags != leafPage {
		return corrupt("%s: inline bucket %d has page type %#x, not a leaf", where, i, flags)
	}
	if pageHeaderSize+count*elementSize > uint64(len(inline)) {
		return corrupt("%s: inline bucket %d holds %d elements, more than fit in %d bytes", where, i, count, len(inline))
	}
	return t.leaf(place{page: where.page, inline: true}, run{t: t, head: inline, size: uint64(len(inline))}, count, depth+1)
}

// place names a leaf in errors: a page, or an inline bucket stored in it.
type place struct {
	page   uint64
	inline bool
}

func (p place) String() string {
	if p.inline {
		return fmt.Sprintf("an inline bucket in page %d", p.page)
	}
	return fmt.Sprintf("page %d", p.page)
}

// run is the bytes of a page and its overflow pages: head holds its start,
// the rest is read from the file at offset at when asked for.
type run struct {
	t    *pageTree
	head []byte
	at   uint64
	size uint64
}

// bytes returns the n bytes at off in the run; the caller checked that
// they lie within it.
func (r run) bytes(off, n uint64) ([]byte, error) {
	if off+n <= uint64(len(r.head)) {
		return r.head[off : off+n], nil
	}
	buf := make([]byte, n)
	if _, err := r.t.file.ReadAt(buf, int64(r.at+off)); err != nil {
		return nil, fmt.Errorf("read bucket entry at offset %d: %w", r.at+off, err)
	}
	return buf, nil
}
