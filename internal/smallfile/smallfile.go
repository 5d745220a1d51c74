// Package smallfile reads files that are small by nature: keys,
// credentials, the metrics file. A path that names something else by
// mistake (a snapshot, a device) is refused at a bound rather than read
// whole into memory.
package smallfile

import (
	"errors"
	"io"
	"os"
)

// ErrTooLarge is returned by Read for a file over its bound; the caller
// says what the file should have been.
var ErrTooLarge = errors.New("too large")

// Read returns the contents of the file at path, or ErrTooLarge when it
// holds more than limit bytes. Its other errors are the file system's,
// which name path.
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, ErrTooLarge
	}
	return data, nil
}
