// Package gcs stores backups in Google Cloud Storage through
// cloud.google.com/go/storage: create-only writes that send a CRC32C and
// check what was stored, reads, listings, and generation-matched deletes.
//
// Every mutation carries a precondition (DoesNotExist on create, the read
// generation on delete), so every one is safe to retry: a retried create
// whose first attempt did land fails its precondition instead of
// overwriting, and the caller recognises its own object by checksum. The
// library's default policy, which retries only idempotent calls, retries
// deletes; creates are sent in one unbuffered request, which the library
// cannot send twice, so Put retries them itself.
package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/progress"
	"github.com/etcd-backup/etcd-backup/internal/proxy"
	"github.com/etcd-backup/etcd-backup/internal/store"
)

// Defaults applied to zero Options fields.
const (
	DefaultRetryDeadline = time.Minute
	DefaultRetryInitial  = time.Second
	DefaultRetryMax      = 16 * time.Second
	DefaultStallTimeout  = time.Minute
)

// copyBuffer is the size of the reads that feed an upload: large, so that
// the hand-offs to the writer's goroutine come a MiB at a time rather than
// 32 KiB.
const copyBuffer = 1 << 20

// maxSends bounds how many times one object is sent whole: a path that
// breaks every upload part-way must end in an error, not a loop.
const maxSends = 5

// Options configure New.
type Options struct {
	// EmulatorHost is $STORAGE_EMULATOR_HOST: host:port or URL of an
	// emulator, reached without credentials. Empty means Google Cloud
	// Storage with Application Default Credentials.
	EmulatorHost string
	// CredentialsFile is $GOOGLE_APPLICATION_CREDENTIALS: the key file
	// Application Default Credentials take before any other.
	CredentialsFile string
	// RetryDeadline bounds how long a request is retried after transient
	// errors; for an upload, from its first failure since it last sent data.
	RetryDeadline time.Duration
	// RetryInitial and RetryMax bound the exponential backoff between retries.
	RetryInitial, RetryMax time.Duration
	// StallTimeout abandons a request whose data stops moving for this long:
	// an upload's is sent again, a read fails. It is also the deadline of
	// each attempt at a metadata request (stat, list, delete), retried
	// within RetryDeadline. A connection that went quiet would otherwise
	// hold the command until its overall deadline.
	StallTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.RetryDeadline == 0 {
		o.RetryDeadline = DefaultRetryDeadline
	}
	if o.RetryInitial == 0 {
		o.RetryInitial = DefaultRetryInitial
	}
	if o.RetryMax == 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	return o
}

// Client is a connection to Cloud Storage (or an emulator).
type Client struct {
	c    *storage.Client
	opts Options
}

// New connects to Cloud Storage. Without an emulator it finds Application
// Default Credentials first, so that their absence is one clear error rather
// than a 401 on the first request.
func New(ctx context.Context, opts Options) (*Client, error) {
	opts = opts.withDefaults()
	var copts []option.ClientOption
	if opts.EmulatorHost != "" {
		endpoint, err := emulatorEndpoint(opts.EmulatorHost)
		if err != nil {
			return nil, err
		}
		// JSON reads: the emulator's XML read path only answers on its
		// public host name.
		copts = []option.ClientOption{option.WithEndpoint(endpoint), option.WithoutAuthentication(), storage.WithJSONReads()}
	} else {
		creds, err := findCredentials(opts.CredentialsFile)
		if err != nil {
			return nil, err
		}
		copts = []option.ClientOption{option.WithAuthCredentials(creds)}
	}
	c, err := storage.NewClient(ctx, append(copts, storage.WithDisabledClientMetrics())...)
	if err != nil {
		return nil, fmt.Errorf("create Cloud Storage client: %w", err)
	}
	return &Client{c: c, opts: opts}, nil
}

// emulatorEndpoint turns $STORAGE_EMULATOR_HOST into the JSON API endpoint,
// as the storage library does when it reads the variable itself.
func emulatorEndpoint(host string) (string, error) {
	if !strings.Contains(host, "://") {
		host = "http://" + host
	}
	u, err := url.Parse(host)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("STORAGE_EMULATOR_HOST %q is not host:port or a URL", host)
	}
	u.Path = "/storage/v1/"
	return u.String(), nil
}

// Close releases the client's connections.
func (c *Client) Close() error { return c.c.Close() }

// Bucket returns a handle on a bucket; nothing is checked until it is used.
func (c *Client) Bucket(name string) *Bucket {
	return &Bucket{name: name, h: c.c.Bucket(name), opts: c.opts}
}

// Bucket is one bucket of a Client.
type Bucket struct {
	name string
	// h has no retry settings of its own: Retryer on a handle that has
	// some edits them in place, shared with every handle derived from it.
	h    *storage.BucketHandle
	opts Options
}

// retry returns the retry settings of the calls the library retries.
func (b *Bucket) retry() []storage.RetryOption {
	return []storage.RetryOption{
		storage.WithBackoff(gax.Backoff{Initial: b.opts.RetryInitial, Max: b.opts.RetryMax, Multiplier: 2}),
		storage.WithMaxRetryDuration(b.opts.RetryDeadline),
	}
}

func (b *Bucket) object(name string) *storage.ObjectHandle {
	return b.h.Object(name).Retryer(b.retry()...)
}

// once returns a handle whose calls the library does not retry: call does.
func (b *Bucket) once(name string) *storage.ObjectHandle {
	return b.h.Object(name).Retryer(storage.WithPolicy(storage.RetryNever))
}

// call runs req, one metadata request, each attempt bounded by the stall
// timeout, and retries it with backoff while it fails transiently, for at
// most RetryDeadline after its first failure. The library's own retries
// share one deadline for every attempt, which an endpoint that accepts
// connections and never answers holds until the command's --timeout. Here
// such an endpoint fails the call within 2×StallTimeout + RetryDeadline:
// the first attempt, the retries, and the last attempt begun before the
// deadline.
func (b *Bucket) call(ctx context.Context, req func(ctx context.Context) error) error {
	backoff := gax.Backoff{Initial: b.opts.RetryInitial, Max: b.opts.RetryMax, Multiplier: 2}
	var failing time.Time
	for {
		err := b.attempt(ctx, req)
		if err == nil || ctx.Err() != nil || !(storage.ShouldRetry(err) || errors.Is(err, store.ErrStalled)) {
			return err
		}
		if failing.IsZero() {
			failing = time.Now()
		}
		pause := backoff.Pause()
		if time.Since(failing)+pause >= b.opts.RetryDeadline {
			return err
		}
		if gax.Sleep(ctx, pause) != nil {
			return err
		}
	}
}

// attempt runs req once, abandoned after the stall timeout.
func (b *Bucket) attempt(ctx context.Context, req func(ctx context.Context) error) error {
	stalled := fmt.Errorf("%w: no answer for %s", store.ErrStalled, b.opts.StallTimeout)
	actx, cancel := context.WithTimeoutCause(ctx, b.opts.StallTimeout, stalled)
	defer cancel()
	err := req(actx)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(actx), store.ErrStalled) {
		return stalled
	}
	return err
}

// URL returns the gs:// URL of the named object.
func (b *Bucket) URL(name string) string {
	return store.URL{Bucket: b.name, Path: name}.String()
}

// Put creates name from r, unless it exists (store.ErrExist). The CRC32C in
// o is sent so that the service rejects corrupted data, and compared with
// what it stored: an object that does not match is deleted again. If r
// fails, or ctx ends, the upload is abandoned and no object is created.
//
// The object goes in one streaming request, with no buffer: the library's
// resumable uploads hold each 16 MiB chunk in memory and wait for the
// service to acknowledge it before reading on. A request that fails with a
// transient error is sent again from r's first byte, which is why r seeks:
// for a file, starting over costs a re-read, not memory.
func (b *Bucket) Put(ctx context.Context, name string, r io.ReadSeeker, o store.PutOptions) (*store.Object, error) {
	backoff := gax.Backoff{Initial: b.opts.RetryInitial, Max: b.opts.RetryMax, Multiplier: 2}
	var failing time.Time // the first failure since a send that carried data
	for sends := 1; ; sends++ {
		src := &source{r: r}
		obj, err := b.send(ctx, name, src, o)
		transient := storage.ShouldRetry(err) || errors.Is(err, store.ErrStalled)
		if err == nil || src.err != nil || ctx.Err() != nil || !transient || sends == maxSends {
			return obj, err
		}
		if src.n.Load() > 0 || failing.IsZero() {
			failing = time.Now()
		}
		if time.Since(failing) >= b.opts.RetryDeadline {
			return nil, err
		}
		if err := gax.Sleep(ctx, backoff.Pause()); err != nil {
			return nil, fmt.Errorf("upload %s: %w", b.URL(name), err)
		}
		// A request can take effect although its answer was lost: then the
		// object is there, and sending it again would only fail at the end.
		// One look, not retried: if it fails, the precondition still holds.
		aerr := b.attempt(ctx, func(ctx context.Context) error {
			_, err := b.once(name).Attrs(ctx)
			return err
		})
		if aerr == nil {
			return nil, fmt.Errorf("upload %s: %w after a failed attempt (%v)", b.URL(name), store.ErrExist, err)
		}
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("upload %s: start again after a transient error: %w", b.URL(name), err)
		}
	}
}

// send makes one attempt at Put.
func (b *Bucket) send(ctx context.Context, name string, src *source, o store.PutOptions) (*store.Object, error) {
	// Cancelling the writer's context is the only way to abandon an upload:
	// Close would finalise whatever was sent so far.
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Once the data has all gone, the answer gets the stall timeout too: a
	// service that took everything and then went quiet is sent the object
	// again, and if the first request landed after all, Put finds it there.
	stopWatch := progress.Watch(src.n.Load, b.opts.StallTimeout, func() {
		why := "the service took no data"
		if src.end.Load() {
			why = "no answer after the last byte"
		}
		cancel(fmt.Errorf("%w: %s for %s", store.ErrStalled, why, b.opts.StallTimeout))
	})
	defer stopWatch()
	w := b.h.Object(name).If(storage.Conditions{DoesNotExist: true}).NewWriter(wctx)
	w.ChunkSize = 0
	known := o.Size >= 0
	w.CRC32C, w.SendCRC32C = o.CRC32C, known
	// Content not known in advance is compared by the caller, which then
	// removes a damaged object: the library's own check would fail the
	// write and leave the object behind, unnamed.
	w.DisableAutoChecksum = !known
	w.ContentType = o.ContentType
	w.Metadata = o.Metadata
	w.KMSKeyName = o.KMSKey
	// The writer buffers: a small object is all "sent" before the request
	// starts, so a stall can surface from Close as well as from the copy.
	stalled := func(err error) error {
		if cause := context.Cause(wctx); errors.Is(cause, store.ErrStalled) {
			return cause
		}
		return err
	}
	if _, err := io.CopyBuffer(w, src, make([]byte, copyBuffer)); err != nil {
		cancel(nil)
		w.Close()
		return nil, fmt.Errorf("upload %s: %w", b.URL(name), b.mapErr(stalled(err), store.ErrExist))
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("upload %s: %w", b.URL(name), b.mapErr(stalled(err), store.ErrExist))
	}
	got := objectOf(w.Attrs())
	if known && (got.CRC32C != o.CRC32C || got.Size != o.Size) {
		err := fmt.Errorf("upload %s: stored %d bytes with CRC32C %08x, sent %d bytes with CRC32C %08x", b.URL(name), got.Size, got.CRC32C, o.Size, o.CRC32C)
		if derr := b.Delete(ctx, name, got.Generation); derr != nil {
			return nil, fmt.Errorf("%w; removing it failed: %v", err, derr)
		}
		return nil, err
	}
	return got, nil
}

// source counts what one send reads, and keeps the reader's own error,
// which is never retried.
type source struct {
	r   io.Reader
	n   atomic.Int64
	end atomic.Bool // read to its end, or failed
	err error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n.Add(int64(n))
	if err != nil {
		s.end.Store(true)
		if err != io.EOF {
			s.err = err
		}
	}
	return n, err
}

// Open reads the named object from its start. The library checks the
// whole object against the CRC32C the service holds; a mismatch is
// store.ErrCorrupt from the last Read. A read that gets no data for the
// stall timeout fails, instead of waiting for the overall deadline.
func (b *Bucket) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	rd := &reader{ctx: ctx, cancel: cancel, url: b.URL(name)}
	// Started before the request: a service that never answers is a stall too.
	rd.stopWatch = progress.Watch(rd.n.Load, b.opts.StallTimeout, func() {
		if !rd.end.Load() {
			cancel(fmt.Errorf("%w: no data from %s for %s", store.ErrStalled, rd.url, b.opts.StallTimeout))
		}
	})
	r, err := b.object(name).NewReader(ctx)
	if err != nil {
		rd.Close()
		return nil, fmt.Errorf("read %s: %w", rd.url, b.mapErr(rd.stalled(err), store.ErrChanged))
	}
	rd.r = r
	return rd, nil
}

// reader exposes Read and Close only: the library's Reader also has a
// WriteTo, which io.Copy would prefer, bypassing the checks below.
type reader struct {
	r         *storage.Reader
	ctx       context.Context
	cancel    context.CancelCauseFunc
	stopWatch func()
	url       string
	n         atomic.Int64
	end       atomic.Bool // read to its end, or failed
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	if err != nil {
		r.end.Store(true)
	}
	// The library reports a checksum mismatch only in its error text.
	if err != nil && err != io.EOF && strings.Contains(err.Error(), "bad CRC") {
		err = fmt.Errorf("read %s: %w: %w", r.url, store.ErrCorrupt, err)
	}
	return n, r.stalled(err)
}

// stalled returns the stall watch's verdict in place of the cancellation
// it caused.
func (r *reader) stalled(err error) error {
	if cause := context.Cause(r.ctx); err != nil && errors.Is(cause, store.ErrStalled) {
		return cause
	}
	return err
}

func (r *reader) Close() error {
	r.stopWatch()
	r.cancel(nil)
	if r.r == nil {
		return nil
	}
	return r.r.Close()
}

// Attrs returns the named object's attributes.
func (b *Bucket) Attrs(ctx context.Context, name string) (*store.Object, error) {
	var a *storage.ObjectAttrs
	err := b.call(ctx, func(ctx context.Context) (err error) {
		a, err = b.once(name).Attrs(ctx)
		return err
	})
	if err != nil {
		return nil, b.wrap("stat "+b.URL(name), err, store.ErrChanged)
	}
	return objectOf(a), nil
}

// listPage is how many objects one list request asks for: the most the
// service returns.
const listPage = 1000

// List yields the objects whose names start with prefix, in name order,
// a page per request.
func (b *Bucket) List(ctx context.Context, prefix string) iter.Seq2[*store.Object, error] {
	return func(yield func(*store.Object, error) bool) {
		token := ""
		for {
			page, next, err := b.page(ctx, prefix, token, listPage)
			if err != nil {
				yield(nil, b.wrap("list "+b.URL(prefix), err, store.ErrChanged))
				return
			}
			for _, a := range page {
				if !yield(objectOf(a), nil) {
					return
				}
			}
			if next == "" {
				return
			}
			token = next
		}
	}
}

// page lists up to n objects from token on, and returns the next token.
func (b *Bucket) page(ctx context.Context, prefix, token string, n int) ([]*storage.ObjectAttrs, string, error) {
	var page []*storage.ObjectAttrs
	var next string
	err := b.call(ctx, func(ctx context.Context) (err error) {
		page = nil
		it := b.h.Retryer(storage.WithPolicy(storage.RetryNever)).Objects(ctx, &storage.Query{Prefix: prefix})
		next, err = iterator.NewPager(it, n, token).NextPage(&page)
		return err
	})
	return page, next, err
}

// Check fails with store.ErrNoBucket if the bucket does not exist. It
// lists one object: that needs only the role that reads objects, where
// the bucket's own attributes need one that reads buckets.
func (b *Bucket) Check(ctx context.Context) error {
	if _, _, err := b.page(ctx, "", "", 1); err != nil {
		return b.wrap("check bucket "+b.URL(""), err, store.ErrChanged)
	}
	return nil
}

// Delete removes the given generation of the named object, so that an
// object replaced since it was read is never removed (store.ErrChanged).
func (b *Bucket) Delete(ctx context.Context, name string, generation int64) error {
	err := b.call(ctx, func(ctx context.Context) error {
		return b.once(name).If(storage.Conditions{GenerationMatch: generation}).Delete(ctx)
	})
	if err != nil {
		return b.wrap("delete "+b.URL(name), err, store.ErrChanged)
	}
	return nil
}

func objectOf(a *storage.ObjectAttrs) *store.Object {
	o := &store.Object{
		Name:        a.Name,
		Size:        a.Size,
		CRC32C:      a.CRC32C,
		Generation:  a.Generation,
		Created:     a.Created,
		Metadata:    a.Metadata,
		Hold:        a.EventBasedHold || a.TemporaryHold,
		RetainUntil: a.RetentionExpirationTime,
	}
	if a.Retention != nil && a.Retention.RetainUntil.After(o.RetainUntil) {
		o.RetainUntil = a.Retention.RetainUntil
	}
	return o
}

// wrap says what failed, op, unless the bucket is missing: then that
// alone is the error.
func (b *Bucket) wrap(op string, err, failed error) error {
	err = b.mapErr(err, failed)
	if errors.Is(err, store.ErrNoBucket) {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

// mapErr wraps the store error callers branch on, keeping the original text;
// a failed precondition means failed. A proxy's failure is said to be one.
func (b *Bucket) mapErr(err, failed error) error {
	if hint, refused := proxy.Hint(err, nil, 0); hint != "" {
		err = fmt.Errorf("%w; %s", err, hint)
		if refused {
			return exitcode.With(exitcode.Usage, err)
		}
		return err
	}
	if terr := tokenRefused(err); terr != nil {
		return terr
	}
	switch {
	case errors.Is(err, storage.ErrObjectNotExist):
		return fmt.Errorf("%w: %w", store.ErrNotExist, err)
	case errors.Is(err, storage.ErrBucketNotExist):
		return fmt.Errorf("%s: %w", b.URL(""), store.ErrNoBucket)
	}
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		return err
	}
	switch gerr.Code {
	case http.StatusNotFound:
		return fmt.Errorf("%w: %w", store.ErrNotExist, err)
	case http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %w", failed, err)
	case http.StatusForbidden, http.StatusUnauthorized:
		// Configuration, as a registry's refusal is: no retry grants a role.
		return exitcode.With(exitcode.Usage, fmt.Errorf("%w (check the IAM roles of the credentials in use): %w", store.ErrPermission, err))
	}
	return err
}
