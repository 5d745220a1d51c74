package verify

import (
	"context"
	"errors"
	"io"

	"github.com/etcd-backup/etcd-backup/internal/manifest"
)

// errAbandoned ends the check of a reader closed before its end.
var errAbandoned = errors.New("read abandoned before the end")

// Reader passes a file of a backup through while Stream checks it, so that
// the data is read once even when it is checked and sent elsewhere.
type Reader struct {
	r       io.Reader
	pw      *io.PipeWriter
	verdict chan error
	err     error // returned by every Read once set
}

// NewReader returns a Reader of r, which holds want of b. In place of
// io.EOF its last Read returns Stream's verdict when the file fails the
// check, so that a consumer that commits at the end (an upload) abandons a
// bad file instead. Close must be called if the Reader is not read to its
// end.
func NewReader(ctx context.Context, r io.Reader, b *manifest.Backup, want manifest.File) *Reader {
	pr, pw := io.Pipe()
	v := &Reader{r: r, pw: pw, verdict: make(chan error, 1)}
	go func() {
		err := Stream(ctx, pr, b, want)
		// Stream may stop early on a bad file: the next Write learns why.
		pr.CloseWithError(err)
		v.verdict <- err
	}()
	return v
}

func (v *Reader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	if n > 0 {
		if _, werr := v.pw.Write(p[:n]); werr != nil {
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

// finish closes the check's input with cause, nil meaning the end of the
// file, and waits for the check. A cause wins over the verdict it provokes;
// at the end the verdict stands, io.EOF if the file passed. Every later
// Read returns the same.
func (v *Reader) finish(cause error) error {
	v.pw.CloseWithError(cause)
	verdict := <-v.verdict
	switch {
	case cause != nil:
		v.err = cause
	case verdict != nil:
		v.err = verdict
	default:
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
