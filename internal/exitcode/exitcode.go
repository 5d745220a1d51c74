// Package exitcode maps errors to the documented process exit codes.
//
// Work code wraps an error with the class it belongs to; the command line
// turns the outermost class into the exit status. An error with no class is a
// failure during work (1).
package exitcode

import "errors"

// The exit codes documented in README.md.
const (
	OK        = 0
	Failure   = 1 // failure during work
	Usage     = 2 // bad flags, arguments or environment; nothing was touched
	Preflight = 3 // a preflight check refused: the cluster is not in a state to back up
	Verify    = 4 // verification failed: the backup is not what it claims to be
	Stale     = 5 // no good backup recent enough (verify --max-age)
)

// Error carries an exit code alongside the error that caused it.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// With returns err classified with code; nil stays nil.
func With(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Of returns the exit code for err: 0 for nil, the code of the outermost
// classified error in its chain, and Failure otherwise.
func Of(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Failure
}
