package gcs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"cloud.google.com/go/auth"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// tokenError is the token endpoint's answer when it gave no token, said
// on one line: the library's own text takes two, and the request it failed
// is a storage URL that says nothing about the cause.
type tokenError struct{ err *auth.Error }

// maxReason bounds how much of an answer's body a tokenError quotes: a
// proxy's error page can run to kilobytes.
const maxReason = 200

func (e tokenError) Error() string {
	var body struct {
		Code        string `json:"error"`
		Description string `json:"error_description"`
	}
	reason := strings.Join(strings.Fields(string(e.err.Body)), " ")
	if json.Unmarshal(e.err.Body, &body) == nil && body.Code != "" {
		reason = strings.TrimSuffix(body.Code+": "+body.Description, ": ")
	}
	if r := []rune(reason); len(r) > maxReason {
		reason = string(r[:maxReason]) + "…"
	}
	endpoint := "the token endpoint"
	if req := e.err.Response.Request; req != nil && req.URL != nil {
		endpoint += " " + req.URL.Scheme + "://" + req.URL.Host + req.URL.Path
	}
	return fmt.Sprintf("%s answered HTTP %d (%s)", endpoint, e.err.Response.StatusCode, reason)
}

func (e tokenError) Unwrap() error { return e.err }

// tokenRefused returns err said as a tokenError when the token endpoint
// answered it, and nil otherwise. A refusal (4xx, but for a timeout or too
// many requests) is a usage error: no retry makes a deleted key or a
// wrongly bound Workload Identity valid, or sets a wrong clock right.
func tokenRefused(err error) error {
	var aerr *auth.Error
	if !errors.As(err, &aerr) || aerr.Response == nil {
		return nil
	}
	if sc := aerr.Response.StatusCode; sc < 400 || sc >= 500 || aerr.Temporary() {
		return tokenError{aerr}
	}
	if bytes.Contains(aerr.Body, []byte("reasonable timeframe")) {
		// Google's answer to a signed request dated outside the hour
		// it accepts ("Invalid JWT: Token must be a short-lived token
		// (60 minutes) and in a reasonable timeframe. Check your iat
		// and exp values ..."): the key is good, the clock that dated
		// it is not.
		return exitcode.With(exitcode.Usage, fmt.Errorf("%w: this machine's clock is off by more than the token endpoint allows, and the key's token requests are dated by it; set the clock right (chronyc makestep, or NTP) and run again", tokenError{aerr}))
	}
	return exitcode.With(exitcode.Usage, fmt.Errorf("%w: the credentials are not valid (a service account key deleted or disabled, or Workload Identity bound to another account or audience); give valid ones in GOOGLE_APPLICATION_CREDENTIALS, or fix the pod's Workload Identity", tokenError{aerr}))
}
