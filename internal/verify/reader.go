package verify

import (
	"context"
	"errors"
	"io"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/snapshot"
)

// errAbandoned ends the check of a reader closed before its end.
var errAbandoned = errors.New("read abandoned before the end")

// Reader passes a file of a backup through while it checks it, so that the
// data is read once even when it is checked and sent elsewhere.
type Reader struct {
	r io.Reader
	// check takes every byte read; end gives the verdict, or the cause
	// that cut the read short.
	check io.Writer
	end   func(cause error) error
	err   error // returned by every Read once set
}

// NewReader returns a Reader of r, which holds want of b. In place of
// io.EOF its last Read returns the verdict when the file fails the check,
// so that a consumer that commits at the end (an upload) abandons a bad
// file instead. Close must be called if the Reader is not read to its end.
//
// A snapshot is hashed as it is read, in the reader's goroutine, as a plain
// upload would hash it; an archive's layout check reads its own way, and
// runs beside it (Stream).
func NewReader(ctx context.Context, r io.Reader, b *manifest.Backup, want manifest.File) *Reader {
	if want.Kind == manifest.KindSnapshot {
		d := snapshot.NewDigester()
		end := func(cause error) error {
			if cause != nil {
				return cause
			}
			got, err := d.Digest()
			return snapshotVerdict(want, got, err)
		}
		return &Reader{r: r, check: d, end: end}
	}
	pr, pw := io.Pipe()
	verdict := make(chan error, 1)
	go func() {
		err := Stream(ctx, pr, b, want)
		// Stream may stop early on a bad file: the next Write learns why.
		pr.CloseWithError(err)
		verdict <- err
	}()
	end := func(cause error) error {
		pw.CloseWithError(cause)
		// A cause wins over the verdict it provokes.
		if v := <-verdict; cause == nil {
			return v
		}
		return cause
	}
	return &Reader{r: r, check: pw, end: end}
}

func (v *Reader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	if n > 0 {
		if _, werr := v.check.Write(p[:n]); werr != nil {
			// The check stopped early, on a bad file: werr is its verdict.
			return 0, v.finish(werr)
		}
	}
	switch {
	case err == io.EOF:
		return n, v.finish(nil)
	case err != nil:
		v.finish(err)
	}
	return n, err
}

// finish ends the check with cause, nil meaning the end of the file. The
// verdict, or the cause, is what every later Read returns: io.EOF if the
// file passed.
func (v *Reader) finish(cause error) error {
	v.err = v.end(cause)
	if v.err == nil {
		v.err = io.EOF
	}
	return v.err
}

// Close stops the check if the Reader was not read to its end.
func (v *Reader) Close() error {
	if v.err == nil {
		v.finish(errAbandoned)
	}
	return nil
}
