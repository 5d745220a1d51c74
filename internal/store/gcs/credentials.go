package gcs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/storage"

	"github.com/etcd-backup/etcd-backup/internal/smallfile"
)

// ErrNoCredentials is returned by New when no credentials can be found.
var ErrNoCredentials = errors.New("no Google Cloud credentials found: run the pod with Workload Identity (a Kubernetes service account bound to a Google service account), or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file")

// ErrCredentialsFile is returned by New when GOOGLE_APPLICATION_CREDENTIALS
// is set and names no credentials file it can use.
var ErrCredentialsFile = errors.New("GOOGLE_APPLICATION_CREDENTIALS names no credentials file")

// ErrTokenFile is returned by New when the credentials file is an external
// account's (Workload Identity Federation) and the file it reads its token
// from cannot be read.
var ErrTokenFile = errors.New("the token file of the credentials cannot be read")

// fileTypes are the credentials files New takes: a service account key, a
// Workload Identity Federation configuration (what OpenShift's ccoctl
// writes), an impersonation, or a person's gcloud login for a run by hand.
// The library's reading of any kind it knows, unasked, is deprecated; naming
// the kinds lets a file of another kind be refused, saying which are taken.
var fileTypes = []credentials.CredType{
	credentials.ServiceAccount,
	credentials.ExternalAccount,
	credentials.ImpersonatedServiceAccount,
	credentials.AuthorizedUser,
	credentials.ExternalAccountAuthorizedUser,
}

// maxCredentialsFile bounds what is read of the file: a key file is a few
// KiB, and anything far larger is something else mounted by mistake.
const maxCredentialsFile = 1 << 20

// findCredentials returns the credentials in file, or with no file, the
// Application Default Credentials.
func findCredentials(file string) (*auth.Credentials, error) {
	opts := &credentials.DetectOptions{Scopes: []string{storage.ScopeReadWrite}}
	if file == "" {
		creds, err := credentials.DetectDefault(opts)
		if err != nil {
			return nil, fmt.Errorf("%w (%v)", ErrNoCredentials, err)
		}
		return creds, nil
	}
	data, err := smallfile.Read(file, maxCredentialsFile)
	if errors.Is(err, smallfile.ErrTooLarge) {
		err = fmt.Errorf("over %d KiB: not a credentials file", maxCredentialsFile>>10)
	}
	if err != nil {
		return nil, credentialsFileError(file, err)
	}
	var head struct {
		Type credentials.CredType `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, credentialsFileError(file, fmt.Errorf("not JSON: %w", err))
	}
	switch {
	case head.Type == "":
		return nil, credentialsFileError(file, errors.New(`JSON without a "type": not a Google credentials file`))
	case !slices.Contains(fileTypes, head.Type):
		return nil, credentialsFileError(file, fmt.Errorf("its type is %q, not one of %s", head.Type, typeList()))
	}
	creds, err := credentials.NewCredentialsFromJSON(head.Type, data, opts)
	if err != nil {
		return nil, credentialsFileError(file, err)
	}
	if err := checkTokenFile(file, data); err != nil {
		return nil, err
	}
	return creds, nil
}

func typeList() string {
	names := make([]string, len(fileTypes))
	for i, t := range fileTypes {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}

// credentialsFileError says what is wrong with the file: not missing
// credentials, which is what the library's error reads as, but most often
// a Secret mounted other than as meant (the variable naming the mount's
// directory, or another of its keys).
func credentialsFileError(file string, err error) error {
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		err = fmt.Errorf("%s: %w", file, err)
	}
	var dir smallfile.DirError
	if errors.As(err, &dir) && dir.File != "" {
		// The mount path of a Secret: the error names its one key.
		return fmt.Errorf("%w: %w", ErrCredentialsFile, err)
	}
	return fmt.Errorf("%w: %w; give the path of the service account key's JSON file (with a Secret, its key below the mount path)", ErrCredentialsFile, err)
}

// checkTokenFile returns ErrTokenFile when data, the credentials in file,
// are an external account's whose token file cannot be read. The library
// reads that file only at the first request, and its error then reads as a
// failed request: the cause is a pod without the projected service account
// token the configuration names.
func checkTokenFile(file string, data []byte) error {
	var cfg struct {
		Type   credentials.CredType `json:"type"`
		Source struct {
			File string `json:"file"`
		} `json:"credential_source"`
	}
	if json.Unmarshal(data, &cfg) != nil || cfg.Type != credentials.ExternalAccount || cfg.Source.File == "" {
		return nil
	}
	f, err := os.Open(cfg.Source.File)
	if err != nil {
		return fmt.Errorf("%w: %s configures an external account (Workload Identity Federation) whose token is read from a file: %w; mount a projected service account token there, with the audience the pool's provider allows (pipelines/README.md shows how)", ErrTokenFile, file, err)
	}
	return f.Close()
}
