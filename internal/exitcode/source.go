package exitcode

import "io"

// Source reads the stream under a check and keeps the first error, but
// io.EOF, that the stream returned: a stream that failed (a connection
// reset, a full disk) is then told apart from content that fails the
// check, which says the backup is not what it claims to be.
type Source struct {
	r   io.Reader
	err error
}

// NewSource returns a Source that reads r.
func NewSource(r io.Reader) *Source { return &Source{r: r} }

func (s *Source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// Err returns the error the stream failed with, or nil.
func (s *Source) Err() error { return s.err }

// Blame returns err, the failure of a check that read s, as it is when the
// stream failed or err already carries a code other than Failure, and as
// a verification failure (Verify) otherwise.
func (s *Source) Blame(err error) error {
	if err == nil || s.err != nil || Of(err) != Failure {
		return err
	}
	return With(Verify, err)
}
