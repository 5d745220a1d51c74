package destination

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
)

// Factory makes destinations of one kind, chosen by URL scheme.
type Factory struct {
	// Scheme is the URL scheme without the colon: "gs", "docker", "oci".
	Scheme string
	// Form shows the URL shape in usage errors, e.g. "oci:PATH".
	Form string
	// Open opens the destination; rest is the URL after "scheme:".
	Open func(ctx context.Context, rest string, opts Options) (Dest, error)
	// Split cuts a BACKUP argument (after "scheme:") into the destination
	// part and the backup's name.
	Split func(rest string) (dest, name string, err error)
	// Guess, where set, returns the URL of this kind that s, given without
	// a scheme, most likely means (a registry's image reference, copied
	// from upload's IMAGE_URL or from podman; a blob's file in a layout,
	// from its snapshot-uri), or "".
	Guess func(s string) string
}

// Registry holds the kinds of destination the program knows.
type Registry struct {
	kinds map[string]Factory
}

// NewRegistry returns a Registry of the given kinds.
func NewRegistry(fs ...Factory) *Registry {
	r := &Registry{kinds: map[string]Factory{}}
	for _, f := range fs {
		r.Register(f)
	}
	return r
}

// Register adds a kind. A scheme registered twice is a programming error.
func (r *Registry) Register(f Factory) {
	if _, dup := r.kinds[f.Scheme]; dup {
		panic("destination: scheme " + f.Scheme + " registered twice")
	}
	r.kinds[f.Scheme] = f
}

// Open opens the destination url names.
func (r *Registry) Open(ctx context.Context, url string, opts Options) (Dest, error) {
	f, rest, err := r.lookup(url)
	if err != nil {
		return nil, err
	}
	return f.Open(ctx, rest, opts.WithDefaults())
}

// OpenBackup opens the destination that holds the backup a BACKUP argument
// names, and returns the backup's name in it.
func (r *Registry) OpenBackup(ctx context.Context, url string, opts Options) (Dest, string, error) {
	f, rest, err := r.lookup(url)
	if err != nil {
		return nil, "", err
	}
	dest, name, err := f.Split(rest)
	if err != nil {
		return nil, "", exitcode.With(exitcode.Usage, err)
	}
	d, err := f.Open(ctx, dest, opts.WithDefaults())
	if err != nil {
		return nil, "", err
	}
	return d, name, nil
}

// Knows says whether url has the scheme of a kind r holds.
func (r *Registry) Knows(url string) bool {
	_, _, err := r.lookup(url)
	return err == nil
}

func (r *Registry) lookup(url string) (Factory, string, error) {
	scheme, rest, ok := strings.Cut(url, ":")
	if f, known := r.kinds[scheme]; ok && known {
		return f, rest, nil
	}
	err := fmt.Errorf("%q is not a destination this program knows: use one of %s", url, r.forms())
	if guess := r.Guess(url); guess != "" {
		err = fmt.Errorf("%w, e.g. %s", err, guess)
	}
	return Factory{}, "", exitcode.With(exitcode.Usage, err)
}

// Guess returns the destination URL that s, given without a scheme, most
// likely means, or "".
func (r *Registry) Guess(s string) string {
	for _, scheme := range slices.Sorted(maps.Keys(r.kinds)) {
		if f := r.kinds[scheme]; f.Guess != nil {
			if url := f.Guess(s); url != "" {
				return url
			}
		}
	}
	return ""
}

func (r *Registry) forms() string {
	var forms []string
	for _, f := range r.kinds {
		forms = append(forms, f.Form)
	}
	slices.Sort(forms)
	return strings.Join(forms, ", ")
}
