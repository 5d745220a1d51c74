package destination_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

func fake(scheme string, opened *string) destination.Factory {
	return destination.Factory{
		Scheme: scheme,
		Form:   scheme + ":PATH",
		Open: func(_ context.Context, rest string, _ destination.Options) (destination.Dest, error) {
			*opened = scheme + " " + rest
			return nil, errors.New("opened")
		},
		Split: func(rest string) (string, string, error) {
			dest, name, ok := strings.Cut(rest, "@")
			if !ok {
				return "", "", errors.New("no name")
			}
			return dest, name, nil
		},
	}
}

func TestRegistryOpen(t *testing.T) {
	var opened string
	docker := fake("docker", &opened)
	docker.Guess = func(s string) string {
		if strings.HasPrefix(s, "registry.example/") {
			return "docker://" + s
		}
		return ""
	}
	r := destination.NewRegistry(fake("oci", &opened), docker)
	tests := []struct {
		url, opened string
		code        int
		msg         string
	}{
		{"oci:/media/backups", "oci /media/backups", exitcode.Failure, "opened"},
		{"docker://HOST/repo", "docker //HOST/repo", exitcode.Failure, "opened"},
		{"s3://bucket", "", exitcode.Usage, "use one of docker:PATH, oci:PATH"},
		{"/plain/dir", "", exitcode.Usage, "is not a destination this program knows: use one of docker:PATH, oci:PATH"},
		{"registry.example/etcd:tag", "", exitcode.Usage, "is not a destination this program knows: use one of docker:PATH, oci:PATH, e.g. docker://registry.example/etcd:tag"},
	}
	for _, tt := range tests {
		opened = ""
		_, err := r.Open(t.Context(), tt.url, destination.Options{})
		if exitcode.Of(err) != tt.code || !strings.HasSuffix(err.Error(), tt.msg) || opened != tt.opened {
			t.Errorf("Open(%q) = %v (exit %d), opened %q; want exit %d, %q, opened %q", tt.url, err, exitcode.Of(err), opened, tt.code, tt.msg, tt.opened)
		}
	}
}

func TestRegistryOpenBackup(t *testing.T) {
	var opened string
	r := destination.NewRegistry(fake("oci", &opened))
	if _, _, err := r.OpenBackup(t.Context(), "oci:/dir@tag", destination.Options{}); opened != "oci /dir" || err == nil {
		t.Errorf("OpenBackup opened %q (%v), want the destination part", opened, err)
	}
	if _, _, err := r.OpenBackup(t.Context(), "oci:/dir", destination.Options{}); exitcode.Of(err) != exitcode.Usage {
		t.Errorf("OpenBackup of a URL naming no backup = %v, want a usage error", err)
	}
}

func TestRegistryDuplicatePanics(t *testing.T) {
	var opened string
	defer func() {
		if recover() == nil {
			t.Error("registering a scheme twice did not panic")
		}
	}()
	destination.NewRegistry(fake("oci", &opened), fake("oci", &opened))
}
