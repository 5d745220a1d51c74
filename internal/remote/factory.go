package remote

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
)

// Factory is the gs:// kind: a prefix in a Cloud Storage bucket, or in the
// emulator opts.GCS.EmulatorHost names.
func Factory() destination.Factory {
	return destination.Factory{
		Scheme: store.Scheme,
		Form:   store.Scheme + "://bucket/prefix",
		Open:   open,
		Split: func(rest string) (string, string, error) {
			ref, err := ParseRef(store.Scheme + ":" + rest)
			if err != nil {
				return "", "", err
			}
			return strings.TrimPrefix(ref.Dest.String(), store.Scheme+":"), nameOf(ref), nil
		},
	}
}

func open(ctx context.Context, rest string, opts destination.Options) (destination.Dest, error) {
	u, err := store.ParseURL(store.Scheme + ":" + rest)
	if err != nil {
		return nil, usage(err)
	}
	var o UploadOptions
	o.KMSKey = opts.GCS.KMSKey
	if s := opts.GCS.ResourcesTo; s != "" {
		to, err := store.ParseURL(s)
		if err != nil {
			return nil, usage(fmt.Errorf("--resources-to: %w", err))
		}
		o.ResourcesTo = &to
	}
	c, err := gcs.New(ctx, gcs.Options{EmulatorHost: opts.GCS.EmulatorHost, CredentialsFile: opts.GCS.CredentialsFile, StallTimeout: opts.StallTimeout})
	if errors.Is(err, gcs.ErrNoCredentials) || errors.Is(err, gcs.ErrCredentialsFile) || errors.Is(err, gcs.ErrTokenFile) {
		return nil, usage(err)
	}
	if err != nil {
		return nil, err
	}
	client := &Client{
		Bucket:           func(name string) Store { return c.Bucket(name) },
		Log:              opts.Log,
		ProgressInterval: opts.ProgressInterval,
	}
	return NewDest(client, u, o, c.Close), nil
}
