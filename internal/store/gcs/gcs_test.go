package gcs_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/store"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs"
	"github.com/etcd-backup/etcd-backup/internal/store/gcs/gcstest"
)

const bucket = "backups"

// fast keeps retries short: the faults below are deterministic, so only the
// number of attempts matters, not how long they wait.
func fast(host string) gcs.Options {
	return gcs.Options{
		EmulatorHost:  host,
		RetryDeadline: time.Second,
		RetryInitial:  time.Millisecond,
		RetryMax:      10 * time.Millisecond,
	}
}

func open(t *testing.T, o gcs.Options) *gcs.Bucket {
	t.Helper()
	c, err := gcs.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.Bucket(bucket)
}

func payload(n int) ([]byte, store.PutOptions) {
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(n)}).Read(data)
	return data, store.PutOptions{
		Size:     int64(n),
		CRC32C:   crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)),
		Metadata: map[string]string{"sha256": "x"},
	}
}

func TestGCSRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1000, 3 << 20} { // empty, small, several copy buffers
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			srv := gcstest.New(t, bucket)
			b := open(t, fast(srv.Host()))
			ctx := t.Context()
			data, o := payload(size)
			got, err := b.Put(ctx, "p/obj", bytes.NewReader(data), o)
			if err != nil {
				t.Fatal(err)
			}
			if got.Size != int64(size) || got.CRC32C != o.CRC32C || got.Metadata["sha256"] != "x" || got.Generation == 0 {
				t.Errorf("Put = %+v", got)
			}
			r, err := b.Open(ctx, "p/obj")
			if err != nil {
				t.Fatal(err)
			}
			back, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("read back %d bytes, err %v; want %d bytes", len(back), err, size)
			}
			attrs, err := b.Attrs(ctx, "p/obj")
			if err != nil || attrs.Generation != got.Generation {
				t.Fatalf("Attrs = %+v, %v", attrs, err)
			}
			if _, err := b.Put(ctx, "p/obj", bytes.NewReader(data), o); !errors.Is(err, store.ErrExist) {
				t.Errorf("second Put: %v, want ErrExist", err)
			}
			if err := b.Delete(ctx, "p/obj", got.Generation); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Attrs(ctx, "p/obj"); !errors.Is(err, store.ErrNotExist) {
				t.Errorf("Attrs after Delete: %v, want ErrNotExist", err)
			}
		})
	}
}

func TestGCSList(t *testing.T) {
	srv := gcstest.New(t, bucket)
	for _, name := range []string{"a/1", "a/2/x", "b/1", "ab"} {
		srv.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name}, Content: []byte(name)})
	}
	b := open(t, fast(srv.Host()))
	var names []string
	for o, err := range b.List(t.Context(), "a/") {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, o.Name)
	}
	if want := []string{"a/1", "a/2/x"}; !slices.Equal(names, want) {
		t.Errorf("List(a/) = %q, want %q", names, want)
	}
}

func TestGCSMissing(t *testing.T) {
	srv := gcstest.New(t, bucket)
	b := open(t, fast(srv.Host()))
	if _, err := b.Open(t.Context(), "nope"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("Open: %v, want ErrNotExist", err)
	}
	c, err := gcs.New(t.Context(), fast(srv.Host()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, err := range c.Bucket("no-such-bucket").List(t.Context(), "") {
		if !errors.Is(err, store.ErrNoBucket) || !strings.Contains(err.Error(), "no-such-bucket") {
			t.Errorf("List of a missing bucket: %v", err)
		}
	}
}

func TestGCSPutWrongCRCLeavesNothing(t *testing.T) {
	srv := gcstest.New(t, bucket)
	b := open(t, fast(srv.Host()))
	data, o := payload(600 << 10)
	o.CRC32C++
	if _, err := b.Put(t.Context(), "obj", bytes.NewReader(data), o); err == nil {
		t.Fatal("Put with a wrong CRC32C succeeded")
	}
	assertNoObject(t, srv, "obj")
}

// failingReader fails where its content ends, and counts seeks.
type failingReader struct {
	*bytes.Reader
	err   error
	seeks int
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.Reader.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func (f *failingReader) Seek(offset int64, whence int) (int64, error) {
	f.seeks++
	return f.Reader.Seek(offset, whence)
}

func TestGCSPutReadErrorLeavesNothing(t *testing.T) {
	for _, size := range []int{100, 700 << 10} {
		srv := gcstest.New(t, bucket)
		b := open(t, fast(srv.Host()))
		data, o := payload(size)
		bad := errors.New("disk read failed")
		// The reader stops early: Close must not finalise a truncated object.
		r := &failingReader{Reader: bytes.NewReader(data[:size/2]), err: bad}
		if _, err := b.Put(t.Context(), "obj", r, o); !errors.Is(err, bad) {
			t.Fatalf("Put: %v, want %v", err, bad)
		}
		assertNoObject(t, srv, "obj")
		if r.seeks != 0 {
			t.Errorf("a read error was retried (%d seeks)", r.seeks)
		}
	}
}

func TestGCSFaults(t *testing.T) {
	const size = 3 << 20 // several copy buffers
	tests := []struct {
		name      string
		fault     gcstest.Fault
		wantSends int
		wantErr   bool
	}{
		{"503 twice then success", gcstest.Fault{Match: gcstest.IsUpload, Times: 2, Do: gcstest.Status(http.StatusServiceUnavailable)}, 3, false},
		{"429 once", gcstest.Fault{Match: gcstest.IsUploadData, Times: 1, Do: gcstest.Status(http.StatusTooManyRequests)}, 2, false},
		{"reset part-way once", gcstest.Fault{Match: gcstest.IsUploadData, Times: 1, Do: gcstest.Reset(100 << 10)}, 2, false},
		// A path that breaks every attempt is given up after five.
		{"reset part-way always", gcstest.Fault{Match: gcstest.IsUploadData, Do: gcstest.Reset(100 << 10)}, 5, true},
		{"503 always", gcstest.Fault{Match: gcstest.IsUpload, Do: gcstest.Status(http.StatusServiceUnavailable)}, 5, true},
		{"403", gcstest.Fault{Match: gcstest.IsUpload, Do: gcstest.Status(http.StatusForbidden)}, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := gcstest.New(t, bucket)
			proxy := gcstest.NewProxy(t, srv)
			proxy.Add(tt.fault)
			b := open(t, fast(proxy.Host()))
			data, o := payload(size)
			_, err := b.Put(t.Context(), "obj", bytes.NewReader(data), o)
			sends := 0
			for _, r := range proxy.Requests() {
				if strings.HasPrefix(r, "POST /upload/") {
					sends++
				}
			}
			if sends != tt.wantSends {
				t.Errorf("the object was sent %d times, want %d", sends, tt.wantSends)
			}
			if tt.wantErr {
				if err == nil {
					t.Fatal("Put succeeded")
				}
				assertNoObject(t, srv, "obj")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := srv.GetObject(bucket, "obj")
			if err != nil || !bytes.Equal(got.Content, data) {
				t.Fatalf("stored object differs (err %v)", err)
			}
		})
	}
}

// TestGCSAnswerLost checks that an upload whose request took effect, but
// whose answer was lost, is not sent again: the retry finds the object.
func TestGCSAnswerLost(t *testing.T) {
	srv := gcstest.New(t, bucket)
	proxy := gcstest.NewProxy(t, srv)
	proxy.Add(gcstest.Fault{Match: gcstest.IsUploadData, Times: 1, Do: proxy.LoseAnswer()})
	b := open(t, fast(proxy.Host()))
	data, o := payload(3 << 20)
	if _, err := b.Put(t.Context(), "obj", bytes.NewReader(data), o); !errors.Is(err, store.ErrExist) {
		t.Fatalf("Put: %v, want ErrExist", err)
	}
	sends := 0
	for _, r := range proxy.Requests() {
		if strings.HasPrefix(r, "POST /upload/") {
			sends++
		}
	}
	if sends != 1 {
		t.Errorf("the object was sent %d times, want 1", sends)
	}
	if got, err := srv.GetObject(bucket, "obj"); err != nil || !bytes.Equal(got.Content, data) {
		t.Fatalf("stored object differs (err %v)", err)
	}
}

// TestGCSStalledUpload checks that a request whose connection goes quiet
// is abandoned after the stall timeout and sent again, and that one that
// always does ends in an error that says so. The service takes nothing, and
// the object is twice what the client's socket buffer can grow to (4 MiB),
// so the client must wait on the service.
func TestGCSStalledUpload(t *testing.T) {
	for _, tt := range []struct {
		name    string
		times   int
		wantErr bool
	}{
		{"once", 1, false},
		{"always", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := gcstest.New(t, bucket)
			proxy := gcstest.NewProxy(t, srv)
			proxy.Add(gcstest.Fault{Match: gcstest.IsUploadData, Times: tt.times, Do: gcstest.Hang(t)})
			o := fast(proxy.Host())
			// Long enough for the emulator to answer 8 MiB under -race
			// once it has the last byte: that wait is bounded too.
			o.StallTimeout = time.Second
			o.RetryDeadline = time.Minute
			b := open(t, o)
			data, po := payload(8 << 20)
			_, err := b.Put(t.Context(), "obj", bytes.NewReader(data), po)
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if got, err := srv.GetObject(bucket, "obj"); err != nil || !bytes.Equal(got.Content, data) {
					t.Fatalf("stored object differs (err %v)", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "the service took no data for 1s") {
				t.Fatalf("Put: %v, want a stall", err)
			}
			assertNoObject(t, srv, "obj")
		})
	}
}

// isMedia matches the requests that read an object's content.
func isMedia(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Query().Get("alt") == "media"
}

// TestGCSCorruptRead checks that content which does not match the CRC32C
// the service sends with it reads as store.ErrCorrupt, also through
// io.Copy, which prefers a WriterTo where the reader has one. (The emulator
// sends no checksum with content; the proxy answers as GCS does.)
func TestGCSCorruptRead(t *testing.T) {
	srv := gcstest.New(t, bucket)
	proxy := gcstest.NewProxy(t, srv)
	b := open(t, fast(proxy.Host()))
	data, o := payload(1 << 20)
	if _, err := b.Put(t.Context(), "obj", bytes.NewReader(data), o); err != nil {
		t.Fatal(err)
	}
	proxy.Add(gcstest.Fault{Match: isMedia, Do: func(w http.ResponseWriter, r *http.Request) {
		crc := binary.BigEndian.AppendUint32(nil, o.CRC32C)
		w.Header().Set("X-Goog-Hash", "crc32c="+base64.StdEncoding.EncodeToString(crc))
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 1
		w.Write(bad)
	}})
	r, err := b.Open(t.Context(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("read of corrupt content: %v, want ErrCorrupt", err)
	}
}

// TestGCSStalledRead checks that a read fails, saying why, when the service
// stops sending: before it answers, or part-way through the object.
func TestGCSStalledRead(t *testing.T) {
	for _, tt := range []struct {
		name string
		do   func(t *testing.T) gcstest.Action
	}{
		{"no answer", func(t *testing.T) gcstest.Action { return gcstest.Hang(t) }},
		{"quiet part-way", func(t *testing.T) gcstest.Action {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", fmt.Sprint(1<<20))
				w.Write(make([]byte, 1<<10))
				http.NewResponseController(w).Flush()
				<-t.Context().Done()
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := gcstest.New(t, bucket)
			data, o := payload(1 << 20)
			if _, err := open(t, fast(srv.Host())).Put(t.Context(), "obj", bytes.NewReader(data), o); err != nil {
				t.Fatal(err)
			}
			proxy := gcstest.NewProxy(t, srv)
			proxy.Add(gcstest.Fault{Match: isMedia, Do: tt.do(t)})
			opts := fast(proxy.Host())
			opts.StallTimeout = 200 * time.Millisecond
			r, err := open(t, opts).Open(t.Context(), "obj")
			if err == nil {
				_, err = io.Copy(io.Discard, r)
				r.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "no data from gs://backups/obj for 200ms") {
				t.Fatalf("read: %v, want a stall", err)
			}
		})
	}
}

func TestGCSPermissionError(t *testing.T) {
	srv := gcstest.New(t, bucket)
	proxy := gcstest.NewProxy(t, srv)
	proxy.Add(gcstest.Fault{Match: gcstest.IsUpload, Do: gcstest.Status(http.StatusForbidden)})
	b := open(t, fast(proxy.Host()))
	data, o := payload(10)
	if _, err := b.Put(t.Context(), "obj", bytes.NewReader(data), o); !errors.Is(err, store.ErrPermission) {
		t.Errorf("Put: %v, want ErrPermission", err)
	}
}

func TestGCSCancelMidUploadLeavesNothing(t *testing.T) {
	srv := gcstest.New(t, bucket)
	proxy := gcstest.NewProxy(t, srv)
	ctx, cancel := context.WithCancelCause(t.Context())
	signal := errors.New("interrupted by terminated")
	// The service takes the data but never answers; the "signal" arrives
	// while it does.
	proxy.Add(gcstest.Fault{Match: gcstest.IsUploadData, Do: gcstest.Stall(func() { cancel(signal) })})
	b := open(t, fast(proxy.Host()))
	data, o := payload(700 << 10)
	if _, err := b.Put(ctx, "obj", bytes.NewReader(data), o); err == nil {
		t.Fatal("Put succeeded after cancellation")
	}
	assertNoObject(t, srv, "obj")
}

func TestGCSEmulatorDown(t *testing.T) {
	host := gcstest.DeadHost(t)
	o := fast(host)
	o.RetryDeadline = 200 * time.Millisecond
	b := open(t, o)
	data, po := payload(10)
	if _, err := b.Put(t.Context(), "obj", bytes.NewReader(data), po); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Put: %v, want connection refused", err)
	}
	if _, err := b.Attrs(t.Context(), "obj"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Attrs: %v, want connection refused", err)
	}
}

func TestGCSDeletePermission(t *testing.T) {
	srv := gcstest.New(t, bucket)
	srv.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: "locked"}, Content: []byte("x")})
	proxy := gcstest.NewProxy(t, srv)
	proxy.Add(gcstest.Fault{Match: gcstest.IsDelete("locked"), Do: gcstest.Status(http.StatusForbidden)})
	b := open(t, fast(proxy.Host()))
	a, err := b.Attrs(t.Context(), "locked")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(t.Context(), "locked", a.Generation); !errors.Is(err, store.ErrPermission) {
		t.Errorf("Delete: %v, want ErrPermission", err)
	}
}

func TestGCSProtection(t *testing.T) {
	srv := gcstest.New(t, bucket)
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	for _, name := range []string{"free", "held", "retained"} {
		obj := fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name}, Content: []byte(name)}
		if name == "retained" {
			obj.Retention = &storage.ObjectRetention{Mode: "Locked", RetainUntil: until}
		}
		srv.CreateObject(obj)
	}
	proxy := gcstest.NewProxy(t, srv)
	// The emulator keeps no holds; GCS reports them as object fields.
	proxy.RewriteObjects(func(obj map[string]any) {
		if obj["name"] == "held" {
			obj["temporaryHold"] = true
		}
	})
	b := open(t, fast(proxy.Host()))
	now := time.Now()
	want := map[string]string{"free": "", "held": "under a hold", "retained": "retained until " + until.Format(time.RFC3339)}
	for o, err := range b.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		if got := o.Protected(now); got != want[o.Name] {
			t.Errorf("%s (listed): Protected = %q, want %q", o.Name, got, want[o.Name])
		}
		a, err := b.Attrs(t.Context(), o.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Protected(now); got != want[o.Name] {
			t.Errorf("%s (attrs): Protected = %q, want %q", o.Name, got, want[o.Name])
		}
	}
}

// TestGCSCredentialsFile: GOOGLE_APPLICATION_CREDENTIALS set to what is
// no credentials file (a Secret mounted other than as meant: the variable
// naming the mount's directory, another of its keys, a path mistyped) is
// said as that, in one line naming the file once, not as credentials
// missing, which would tell the user to set the variable they set.
func TestGCSCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	pemKey := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(pemKey, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	// A Secret's mount path, given for its one key.
	secret := t.TempDir()
	if err := os.WriteFile(filepath.Join(secret, "key.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	taken := "not one of service_account, external_account, impersonated_service_account, authorized_user, external_account_authorized_user"
	cases := []struct {
		file, says string
	}{
		{filepath.Join(dir, "missing.json"), "no such file"},
		{dir, "is a directory; give the path of the service account key's JSON file"},
		{secret, "is a directory; give the file in it, " + filepath.Join(secret, "key.json")},
		{pemKey, "not JSON"},
		// A docker-registry Secret's key, mounted in place of the key file.
		{write("dockerconfig.json", `{"auths":{"registry.example.com":{"auth":"eDp5"}}}`), `JSON without a "type": not a Google credentials file`},
		{write("gdch.json", `{"type":"gdch_service_account","project":"p"}`), `its type is "gdch_service_account", ` + taken},
		{write("big.json", `{"type":"service_account","pad":"`+strings.Repeat("x", 1<<20)+`"}`), "over 1024 KiB: not a credentials file"},
		{write("badkey.json", `{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com"}`), "credentials"},
	}
	for _, c := range cases {
		_, err := gcs.New(t.Context(), gcs.Options{CredentialsFile: c.file})
		if !errors.Is(err, gcs.ErrCredentialsFile) || errors.Is(err, gcs.ErrNoCredentials) || strings.Contains(err.Error(), "\n") || strings.Count(err.Error(), c.file+":") != 1 || !strings.Contains(err.Error(), c.says) {
			t.Errorf("New with credentials file %s: %v, want ErrCredentialsFile in one line naming the file once and saying %q", c.file, err, c.says)
		}
	}
	// Named, the file in the Secret is all the line needs to say.
	want := "give the file in it, " + filepath.Join(secret, "key.json")
	if _, err := gcs.New(t.Context(), gcs.Options{CredentialsFile: secret}); err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("New with credentials file %s: %v, want it to end %q", secret, err, want)
	}
}

// TestGCSCredentialsFileTypes: each kind of credentials file an
// administrator mounts is taken, as Application Default Credentials take it.
func TestGCSCredentialsFileTypes(t *testing.T) {
	key, err := rsa.GenerateKey(crand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	serviceAccount := map[string]any{"type": "service_account", "project_id": "p", "private_key_id": "k", "private_key": pemKey, "client_email": "backup@p.iam.gserviceaccount.com", "client_id": "1"}
	user := map[string]any{"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}
	for _, cfg := range []map[string]any{
		serviceAccount,
		user,
		{"type": "impersonated_service_account", "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/backup@p.iam.gserviceaccount.com:generateAccessToken", "source_credentials": user},
		{"type": "external_account_authorized_user", "audience": "//iam.googleapis.com/locations/global/workforcePools/pool/providers/p", "client_id": "c", "client_secret": "s", "refresh_token": "r", "token_url": "https://sts.googleapis.com/v1/oauthtoken"},
	} {
		data, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "key.json")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := gcs.New(t.Context(), gcs.Options{CredentialsFile: file})
		if err != nil {
			t.Errorf("New with a %s file: %v", cfg["type"], err)
			continue
		}
		c.Close()
	}
}

// TestGCSTokenFile: credentials of an external account (Workload Identity
// Federation) whose token file the pod does not have fail at New, one line
// naming both files and what to mount, ErrTokenFile; with the token file
// there, New succeeds (the token is read at the first request). Before,
// the first request failed with the library's "failed to open credential
// file", as a failed request, exit 1.
func TestGCSTokenFile(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	cfg, err := json.Marshal(map[string]any{
		"type":               "external_account",
		"audience":           "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool/providers/openshift",
		"subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
		"token_url":          "https://sts.googleapis.com/v1/token",
		"credential_source":  map[string]any{"file": token, "format": map[string]string{"type": "text"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "credential-configuration.json")
	if err := os.WriteFile(file, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = gcs.New(t.Context(), gcs.Options{CredentialsFile: file})
	if !errors.Is(err, gcs.ErrTokenFile) || !errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "mount a projected service account token there") {
		t.Errorf("New without the token file: %v, want ErrTokenFile in one line naming %s and %s", err, file, token)
	}
	if err := os.WriteFile(token, []byte("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := gcs.New(t.Context(), gcs.Options{CredentialsFile: file})
	if err != nil {
		t.Fatalf("New with the token file there: %v", err)
	}
	c.Close()
}

// TestGCSTokenRefused: a service account key that the token endpoint
// refuses (deleted or disabled: 400 invalid_grant) is one line naming the
// endpoint and its reason, and a usage error (exit 2), not a failure to
// retry later; a token endpoint that fails for now stays exit 1. The token
// endpoint is a fake: Google's cannot be reached, nor made to refuse.
func TestGCSTokenRefused(t *testing.T) {
	key, err := rsa.GenerateKey(crand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	cases := []struct {
		status int
		body   string
		code   int
		says   string
	}{
		{http.StatusBadRequest, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`, exitcode.Usage, "HTTP 400 (invalid_grant: Invalid JWT Signature.): the credentials are not valid"},
		{http.StatusBadRequest, `{"error":"invalid_grant","error_description":"Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."}`, exitcode.Usage, "HTTP 400 (invalid_grant: Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.): this machine's clock is off"},
		{http.StatusBadRequest, `{"error":"invalid_grant","error_description":"Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"}`, exitcode.Usage, "HTTP 400 (invalid_grant: Invalid JWT: Token must be a short-lived token and in a reasonable timeframe): this machine's clock is off"},
		{http.StatusUnauthorized, "<html>\n<body>no</body>\n</html>", exitcode.Usage, "HTTP 401 (<html> <body>no</body> </html>): the credentials are not valid"},
		{http.StatusServiceUnavailable, `{"error":"unavailable"}`, exitcode.Failure, "HTTP 503 (unavailable)"},
		{http.StatusBadGateway, "bad gateway", exitcode.Failure, "HTTP 502 (bad gateway)"},
		{http.StatusForbidden, strings.Repeat("<p>denied</p> ", 500), exitcode.Usage, "HTTP 403 (" + strings.Repeat("<p>denied</p> ", 500)[:200] + "…): the credentials are not valid"},
	}
	for _, c := range cases {
		t.Run(strconv.Itoa(c.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			}))
			defer srv.Close()
			sa, err := json.Marshal(map[string]string{
				"type": "service_account", "project_id": "p", "private_key_id": "k", "private_key": string(pemKey),
				"client_email": "backup@p.iam.gserviceaccount.com", "client_id": "1", "token_uri": srv.URL + "/token",
			})
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "key.json")
			if err := os.WriteFile(file, sa, 0o600); err != nil {
				t.Fatal(err)
			}
			o := fast("")
			o.CredentialsFile = file
			b := open(t, o)
			_, err = b.Attrs(t.Context(), "x")
			want := "stat gs://" + bucket + "/x: the token endpoint " + srv.URL + "/token answered " + c.says
			if err == nil || !strings.HasPrefix(err.Error(), want) || exitcode.Of(err) != c.code || strings.Contains(err.Error(), "\n") {
				t.Errorf("stat with the token refused: %q (exit %d), want one line starting %q, exit %d", err, exitcode.Of(err), want, c.code)
			}
		})
	}
}

func TestGCSEmulatorHost(t *testing.T) {
	srv := gcstest.New(t, bucket)
	for _, host := range []string{srv.Host(), srv.URL()} {
		b := open(t, fast(host))
		if _, err := b.Attrs(t.Context(), "x"); !errors.Is(err, store.ErrNotExist) {
			t.Errorf("emulator at %q: %v, want ErrNotExist", host, err)
		}
	}
	if _, err := gcs.New(t.Context(), gcs.Options{EmulatorHost: "http://"}); err == nil {
		t.Error("empty emulator host accepted")
	}
}

func assertNoObject(t *testing.T, srv *gcstest.Server, name string) {
	t.Helper()
	if _, err := srv.GetObject(bucket, name); err == nil {
		t.Errorf("object %s exists after a failed upload", name)
	}
}

// TestGCSBlackHole checks that every request to an endpoint that accepts
// connections and never answers fails with store.ErrStalled once its
// attempts, each bounded by the stall timeout, have used up the retry
// deadline; not at the overall deadline.
func TestGCSBlackHole(t *testing.T) {
	o := fast(gcstest.BlackHole(t))
	o.StallTimeout = 100 * time.Millisecond
	o.RetryDeadline = 300 * time.Millisecond
	b := open(t, o)
	data, po := payload(10)
	requests := map[string]func(ctx context.Context) error{
		"stat":   func(ctx context.Context) error { _, err := b.Attrs(ctx, "obj"); return err },
		"delete": func(ctx context.Context) error { return b.Delete(ctx, "obj", 1) },
		"check":  b.Check,
		"list": func(ctx context.Context) error {
			for _, err := range b.List(ctx, "") {
				return err
			}
			return nil
		},
		"read": func(ctx context.Context) error { _, err := b.Open(ctx, "obj"); return err },
		"put": func(ctx context.Context) error {
			_, err := b.Put(ctx, "obj", bytes.NewReader(data), po)
			return err
		},
	}
	for name, req := range requests {
		t.Run(name, func(t *testing.T) {
			// Far beyond the bound, far below the test's own timeout.
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := req(ctx); !errors.Is(err, store.ErrStalled) || ctx.Err() != nil {
				t.Errorf("%s: %v, want %v before the overall deadline", name, err, store.ErrStalled)
			}
		})
	}
}

func TestGCSNoBucket(t *testing.T) {
	srv := gcstest.New(t, bucket)
	c, err := gcs.New(t.Context(), fast(srv.Host()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := c.Bucket("missing")
	if err := b.Check(t.Context()); !errors.Is(err, store.ErrNoBucket) || !strings.Contains(err.Error(), "gs://missing") {
		t.Errorf("Check: %v, want %v naming gs://missing", err, store.ErrNoBucket)
	}
	if err := c.Bucket(bucket).Check(t.Context()); err != nil {
		t.Errorf("Check of an existing, empty bucket: %v", err)
	}
}
