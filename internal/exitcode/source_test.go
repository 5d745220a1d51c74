package exitcode

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestSourceBlame: a check's failure is a verification failure when the
// stream under it gave all its bytes, and keeps its own code when the
// stream failed or the error already carries one.
func TestSourceBlame(t *testing.T) {
	reset := errors.New("connection reset by peer")
	bad := errors.New("invalid tar header")
	tests := []struct {
		name   string
		stream io.Reader
		err    error
		want   int
	}{
		{"content", strings.NewReader("bytes"), bad, Verify},
		{"stream failed", iotest.ErrReader(reset), bad, Failure},
		{"stream failed after bytes", io.MultiReader(strings.NewReader("bytes"), iotest.ErrReader(reset)), bad, Failure},
		{"already usage", strings.NewReader("bytes"), With(Usage, bad), Usage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSource(tt.stream)
			io.Copy(io.Discard, s)
			if got := Of(s.Blame(tt.err)); got != tt.want {
				t.Errorf("Blame after reading %s = exit %d, want %d", tt.name, got, tt.want)
			}
		})
	}
	s := NewSource(iotest.ErrReader(reset))
	io.Copy(io.Discard, s)
	if !errors.Is(s.Err(), reset) || s.Blame(nil) != nil {
		t.Errorf("Err() = %v, Blame(nil) = %v; want the stream's error and nil", s.Err(), s.Blame(nil))
	}
}
