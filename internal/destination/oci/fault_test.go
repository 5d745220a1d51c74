package oci_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/destination/desttest"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci"
	"github.com/etcd-backup/etcd-backup/internal/destination/oci/ocitest"
	"github.com/etcd-backup/etcd-backup/internal/encryption"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

// blobData matches the requests that carry a blob's bytes.
func blobData(r *http.Request) bool {
	return strings.Contains(r.URL.Path, "/blobs/uploads/") && (r.Method == http.MethodPatch || r.Method == http.MethodPut)
}

// first answers the first n requests that match with do, and lets the
// rest through.
func first(n int32, match func(*http.Request) bool, do func(http.ResponseWriter, *http.Request)) func(http.ResponseWriter, *http.Request) bool {
	var seen atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !match(r) || seen.Add(1) > n {
			return false
		}
		do(w, r)
		return true
	}
}

func unavailable(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}`, http.StatusServiceUnavailable)
}

// reset reads some of the body, then drops the connection with a RST.
func reset(w http.ResponseWriter, r *http.Request) {
	io.CopyN(io.Discard, r.Body, 64<<10)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// testFaults puts a proxy in front of a real registry: a 503, a reset in
// the middle of a blob and encrypted bytes changed on the way are retried
// and the upload completes with the bytes sent; a registry that stops
// answering fails the upload within the stall timeout's bounds, not at the
// overall deadline, and nothing counts as complete.
func testFaults(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{Deletes: true})
	key := desttest.AgeKey(t)
	cases := []struct {
		name    string
		fault   func(t *testing.T) func(http.ResponseWriter, *http.Request) bool
		ok      bool
		encrypt bool
	}{
		{"503 on a blob", func(*testing.T) func(http.ResponseWriter, *http.Request) bool {
			return first(2, blobData, unavailable)
		}, true, false},
		{"reset mid-blob", func(*testing.T) func(http.ResponseWriter, *http.Request) bool {
			return first(1, blobData, reset)
		}, true, false},
		{"encrypted bytes changed on the way", func(*testing.T) func(http.ResponseWriter, *http.Request) bool {
			return first(1, blobData, func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if len(body) > 0 {
					body[len(body)/2] ^= 0xff
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
				reg.Handler.ServeHTTP(w, r)
			})
		}, true, true},
		{"stall", func(t *testing.T) func(http.ResponseWriter, *http.Request) bool {
			return first(1000, blobData, func(_ http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				select {
				case <-r.Context().Done():
				case <-t.Context().Done():
				}
			})
		}, false, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := reg.NewProxy(t)
			p.Fault = c.fault(t)
			o := options(t, destination.RegistryOptions{InsecureSkipTLSVerify: true})
			o.StallTimeout = 300 * time.Millisecond
			d, err := kinds().Open(t.Context(), "docker://"+p.Host+"/backups/faults"+strconv.Itoa(i), o)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			// Far beyond the bound, far below the test's own timeout.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var to *encryption.Recipients
			if c.encrypt {
				to = desttest.Recipients(t, key)
			}
			res, err := destination.UploadDir(ctx, d, bs[0].Dir, to)
			if ctx.Err() != nil {
				t.Fatalf("upload held until the overall deadline: %v", err)
			}
			entries, lerr := d.List(t.Context())
			if lerr != nil {
				t.Fatal(lerr)
			}
			if c.ok {
				if err != nil || len(entries) != 1 || entries[0].State != destination.Complete {
					t.Fatalf("upload through %s = %v, list %v; want it retried to one complete backup", c.name, err, entries)
				}
				if _, err := destination.Verify(t.Context(), d, res.Name, verify.Options{Log: desttest.Log(t)}, desttest.Identity(t, key)); err != nil {
					t.Errorf("the backup stored through %s does not verify: %v", c.name, err)
				}
				return
			}
			// The proxy takes each request body whole, as nginx does, then
			// holds the answer.
			if err == nil || !strings.Contains(err.Error(), "after the whole file was sent") || !strings.Contains(err.Error(), "proxy_request_buffering") || len(entries) != 0 {
				t.Errorf("upload to a stalled registry = %v, list %v; want an error naming a buffering proxy and nothing listed", err, entries)
			}
		})
	}
}

// testMetadataFaults: one request that moves no file (a manifest read, the
// tag list, a delete) answered with a 503 or not at all is retried, each
// attempt with a stall timeout of its own, and the command succeeds; a
// delete whose answer is lost, the registry having deleted the manifest,
// is done. Before, a stalled attempt left the retries no time, and the tag
// list and deletes were not retried: one 503 failed list, --latest and prune.
func testMetadataFaults(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{Deletes: true})
	stall := func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-t.Context().Done():
		}
	}
	lostAnswer := func(w http.ResponseWriter, r *http.Request) {
		reg.Handler.ServeHTTP(httptest.NewRecorder(), r)
		unavailable(w, r)
	}
	manifestRead := func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/")
	}
	tagList := func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/tags/list") }
	deletion := func(r *http.Request) bool { return r.Method == http.MethodDelete }
	list := func(t *testing.T, d destination.Dest, _ string) {
		entries, err := d.List(t.Context())
		if err != nil || len(entries) != 1 || entries[0].State != destination.Complete {
			t.Errorf("list = %v, %v; want the one complete backup", entries, err)
		}
	}
	del := func(t *testing.T, d destination.Dest, name string) {
		if err := d.Delete(t.Context(), name); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if entries, err := d.List(t.Context()); err != nil || len(entries) != 0 {
			t.Errorf("after the delete, list = %v, %v; want nothing", entries, err)
		}
	}
	cases := []struct {
		name  string
		fault func(http.ResponseWriter, *http.Request) bool
		run   func(t *testing.T, d destination.Dest, name string)
	}{
		{"manifest read stalls", first(1, manifestRead, stall), list},
		{"tag list 503", first(1, tagList, unavailable), list},
		{"tag list stalls", first(1, tagList, stall), list},
		{"delete 503", first(1, deletion, unavailable), del},
		{"delete stalls", first(1, deletion, stall), del},
		{"delete's answer lost", first(1, deletion, lostAnswer), del},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := "docker://" + reg.Host + "/backups/meta" + strconv.Itoa(i)
			d, err := kinds().Open(t.Context(), url, options(t, destination.RegistryOptions{InsecureSkipTLSVerify: true}))
			if err != nil {
				t.Fatal(err)
			}
			res, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil)
			d.Close()
			if err != nil {
				t.Fatal(err)
			}
			p := reg.NewProxy(t)
			p.Fault = c.fault
			c.run(t, throughProxy(t, url, reg, p), res.Name)
		})
	}
}

// throughProxy opens url, a repository of reg, through p, with a stall
// timeout short enough for faults that stall.
func throughProxy(t *testing.T, url string, reg *ocitest.Registry, p *ocitest.Proxy) destination.Dest {
	t.Helper()
	o := options(t, destination.RegistryOptions{InsecureSkipTLSVerify: true})
	o.StallTimeout = 300 * time.Millisecond
	d, err := kinds().Open(t.Context(), strings.Replace(url, reg.Host, p.Host, 1), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// uploaded starts a registry holding the backup in dir in repository repo,
// and returns it with the repository's URL and what the upload returned.
func uploaded(t *testing.T, dir, repo string) (*ocitest.Registry, string, destination.Result) {
	t.Helper()
	reg := ocitest.Start(t, ocitest.Options{})
	url := "docker://" + reg.Host + "/" + repo
	d := openDest(t, url, destination.RegistryOptions{InsecureSkipTLSVerify: true})
	res, err := destination.UploadDir(t.Context(), d, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return reg, url, res
}

// testRateLimited: a registry that answers 429 Too Many Requests is asked
// again by containers/image, which waits as the Retry-After says, up to
// five times in all; then the command fails at once, saying the registry
// rate limits this client and how long it asks to wait. A wait longer than
// the stall timeout ends the attempt, and the command, with the same line.
// A blob's bytes, which containers/image does not send again, are sent
// again by the retries, and a 429 at the last says the same. Before, each
// of five attempts asked five times more, a long wait read "context
// deadline exceeded", and a refused blob only "toomanyrequests".
func testRateLimited(t *testing.T, bs []desttest.Backup) {
	reg, url, res := uploaded(t, bs[0].Dir, "backups/limited")
	tagList := func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/tags/list") }
	snapshotRead := func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/sha256:"+bs[0].Manifest.File(manifest.KindSnapshot).SHA256)
	}
	// Unencrypted, backup.json is stored as it is on disk.
	bj, err := os.ReadFile(filepath.Join(bs[0].Dir, manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	manifestRead := func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/sha256:"+fmt.Sprintf("%x", sha256.Sum256(bj)))
	}
	download := func(ctx context.Context, d destination.Dest) error {
		_, err := destination.Download(ctx, d, res.Name, filepath.Join(t.TempDir(), "down"), nil)
		return err
	}
	list := func(ctx context.Context, d destination.Dest) error {
		entries, err := d.List(ctx)
		if err == nil && len(entries) != 1 {
			t.Errorf("list = %v; want the one backup", entries)
		}
		return err
	}
	upload := func(ctx context.Context, d destination.Dest) error {
		_, err := destination.UploadDir(ctx, d, bs[1].Dir, nil)
		return err
	}
	cases := []struct {
		name       string
		match      func(*http.Request) bool
		run        func(context.Context, destination.Dest) error
		times      int32
		retryAfter string
		requests   int32
		says       string // "" for success
	}{
		{"once", tagList, list, 1, "0", 2, ""},
		{"always", tagList, list, 1000, "0", 5, "is rate limiting this client (429 Too Many Requests); run again later"},
		{"for an hour", tagList, list, 1000, "3600", 1, "is rate limiting this client (429 Too Many Requests) and asks to wait 1h0m0s; run again later"},
		{"a blob's bytes", blobData, upload, 1000, "0", 0, "is rate limiting this client (429 Too Many Requests); run again later"},
		{"a download for an hour", snapshotRead, download, 1000, "3600", 1, "is rate limiting this client (429 Too Many Requests) and asks to wait 1h0m0s; run again later"},
		{"backup.json for an hour", manifestRead, list, 1000, "3600", 1, "is rate limiting this client (429 Too Many Requests) and asks to wait 1h0m0s; run again later"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var requests atomic.Int32
			p := reg.NewProxy(t)
			p.Fault = func(w http.ResponseWriter, r *http.Request) bool {
				if !c.match(r) || requests.Add(1) > c.times {
					return false
				}
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Retry-After", c.retryAfter)
				http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limit exceeded"}]}`, http.StatusTooManyRequests)
				return true
			}
			err := c.run(t.Context(), throughProxy(t, url, reg, p))
			switch {
			case c.says == "" && err != nil:
				t.Errorf("%v; want success", err)
			case c.says != "" && (err == nil || !strings.Contains(err.Error(), p.Host+" "+c.says) || strings.Count(err.Error(), "rate limiting") != 1 || exitcode.Of(err) != exitcode.Failure):
				t.Errorf("%v (exit %d); want exit 1 saying %q once", err, exitcode.Of(err), c.says)
			}
			if got := min(requests.Load(), c.times+1); c.requests != 0 && got != c.requests {
				t.Errorf("the registry was asked %d times, want %d", got, c.requests)
			}
		})
	}
}

// testNarrowAccept: a proxy that narrows what a client accepts to Docker's
// own manifest makes the registry answer "manifest unknown" for every
// backup it lists. list says so for each tag, with the registry's answer,
// and does not call the repository one without backups.
func testNarrowAccept(t *testing.T, bs []desttest.Backup) {
	reg, url, res := uploaded(t, bs[0].Dir, "backups/narrowed")
	p := reg.NewProxy(t)
	p.Fault = func(_ http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			r.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
		}
		return false
	}
	var log bytes.Buffer
	o := options(t, destination.RegistryOptions{InsecureSkipTLSVerify: true})
	o.Log = slog.New(slog.NewTextHandler(&log, nil))
	d, err := kinds().Open(t.Context(), strings.Replace(url, reg.Host, p.Host, 1), o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	entries, err := d.List(t.Context())
	if err != nil || len(entries) != 0 {
		t.Fatalf("list = %v, %v; want nothing it can read", entries, err)
	}
	if want := p.Host + "/backups/narrowed:" + res.Name + " is listed, but reading it found no manifest"; !strings.Contains(log.String(), want) || !strings.Contains(log.String(), "accept header does not support OCI manifests") {
		t.Errorf("list logged:\n%s\nwant %q with the registry's answer", log.String(), want)
	}
	if got, _ := d.(destination.Hinter).Nearby(t.Context()); !strings.Contains(got, "tags that name backups of this tool are there, and none could be read") {
		t.Errorf("nearby = %q", got)
	}
}

// testNoWrites: a registry in read-only maintenance (a 405 page), a
// pull-through cache (distribution's UNSUPPORTED) and a registry that
// creates no repository on a push (Harbor's NAME_UNKNOWN for a project
// that does not exist) take no push, nor does a registry with token scopes
// from credentials that may only pull (its UNAUTHORIZED); all but the
// first are answered by a proxy in front of a real registry. upload says
// why at once, exit 2. It retried the first for 15 s and reported the
// second as "unsupported", both exit 1, and the third exit 1; the fourth
// asked for the --authfile that was given.
func testNoWrites(t *testing.T, bs []desttest.Backup) {
	refuse := func(status int, body string) func(http.ResponseWriter, *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodPost && r.Method != http.MethodPut {
				return false
			}
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
			return true
		}
	}
	const noWrites = "the registry takes no writes to this repository: it is a pull-through cache, or read-only for maintenance"
	cases := []struct {
		name     string
		readOnly bool
		fault    func(http.ResponseWriter, *http.Request) bool
		auth     bool // an --authfile with an entry for the registry
		says     string
	}{
		{"read-only", true, nil, false, noWrites},
		{"pull-through cache", false, refuse(http.StatusMethodNotAllowed, `{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}`), false, noWrites},
		{"no such project", false, refuse(http.StatusNotFound, `{"errors":[{"code":"NAME_UNKNOWN","message":"project backups not found: project backups not found"}]}`), false, "/backups/nowrites on a push: create it first"},
		{"credentials that may only pull", false, refuse(http.StatusUnauthorized, `{"errors":[{"code":"UNAUTHORIZED","message":"access to the requested resource is not authorized"}]}`), true, "may pull but not push"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := ocitest.Start(t, ocitest.Options{ReadOnly: c.readOnly}).NewProxy(t)
			p.Fault = c.fault
			opts := destination.RegistryOptions{InsecureSkipTLSVerify: true}
			if c.auth {
				opts.AuthFile = ocitest.WriteAuthFile(t, p.Host, "backup", "pull-only")
			}
			d := openDest(t, "docker://"+p.Host+"/backups/nowrites", opts)
			_, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil)
			if err == nil || !strings.Contains(err.Error(), c.says) || exitcode.Of(err) != exitcode.Usage {
				t.Errorf("upload: %v (exit %d); want exit 2 saying %q", err, exitcode.Of(err), c.says)
			}
		})
	}
}

// cutOff drops the connection of every download of a blob after its
// first n bytes. containers/image resumes a download that made progress,
// where the registry takes a range.
func cutOff(reg *ocitest.Registry, digest string, n int) func(http.ResponseWriter, *http.Request) bool {
	return first(1000, func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/sha256:"+digest)
	}, func(w http.ResponseWriter, r *http.Request) {
		reg.Handler.ServeHTTP(desttest.CutAfter(w, n), r)
	})
}

// testReadFaults: a resources archive or backup.json whose download is cut
// off is a failed read (exit 1, retry), never a failed check (exit 4) or a
// corrupt backup in a listing, which would call the backup unusable and
// make download --latest pass over it for an older one. Plain, encrypted
// with the key, and encrypted without it.
func testReadFaults(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{})
	key := desttest.AgeKey(t)
	cases := []struct {
		name    string
		file    string
		encrypt bool
		run     func(t *testing.T, d destination.Dest, name string) error
	}{
		{"list", manifest.FileName, false, func(t *testing.T, d destination.Dest, _ string) error {
			entries, err := d.List(t.Context())
			for _, e := range entries {
				if e.State != destination.Complete {
					t.Errorf("list: %s %s (%s), want it complete or the listing failed", e.URL, e.State, e.Problem)
				}
			}
			return err
		}},
		{"download --latest", manifest.KindResources, false, func(t *testing.T, d destination.Dest, _ string) error {
			found, err := destination.Newest(t.Context(), d, "", desttest.Log(t))
			if err != nil {
				t.Fatal(err)
			}
			_, err = destination.LatestGood(d, found, desttest.Log(t), func(name string) (*manifest.Backup, error) {
				return destination.Download(t.Context(), d, name, filepath.Join(t.TempDir(), "down"), nil)
			})
			return err
		}},
		{"download with the key", manifest.KindResources, true, func(t *testing.T, d destination.Dest, name string) error {
			_, err := destination.Download(t.Context(), d, name, filepath.Join(t.TempDir(), "down"), desttest.Identity(t, key))
			return err
		}},
		{"verify without the key", manifest.KindResources, true, func(t *testing.T, d destination.Dest, name string) error {
			_, err := destination.Verify(t.Context(), d, name, verify.Options{Log: desttest.Log(t)}, nil)
			return err
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := reg.NewProxy(t)
			d, err := kinds().Open(t.Context(), "docker://"+p.Host+"/backups/read"+strconv.Itoa(i), options(t, destination.RegistryOptions{InsecureSkipTLSVerify: true}))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			var to *encryption.Recipients
			if c.encrypt {
				to = desttest.Recipients(t, key)
			}
			var res destination.Result
			for _, b := range bs {
				if res, err = destination.UploadDir(t.Context(), d, b.Dir, to); err != nil {
					t.Fatal(err)
				}
			}
			// backup.json before its first byte; the archive past an
			// encrypted file's header.
			_, cut, _ := strings.Cut(res.Files[manifest.FileName], "@sha256:")
			after := 0
			if c.file != manifest.FileName {
				after = 1 << 10
				s, err := d.Open(t.Context(), res.Name)
				if err != nil {
					t.Fatal(err)
				}
				cut = s.Manifest().File(c.file).Content().SHA256
				s.Close()
			}
			p.Fault = cutOff(reg, cut, after)
			err = c.run(t, d, res.Name)
			if exitcode.Of(err) != exitcode.Failure || !strings.Contains(err.Error(), "reset") {
				t.Errorf("%s with its %s cut off: %v (exit %d), want exit %d naming the reset", c.name, c.file, err, exitcode.Of(err), exitcode.Failure)
			}
		})
	}
}

// testDeletesRefused: a registry that refuses deletes (distribution's
// default) costs prune one line that says how to enable them, exit 1;
// credentials that may read and push but not delete (a robot account's
// usual rights; the refusal injected at a proxy, as a registry with rights
// per action answers) one line saying that prune needs others, exit 2.
// Neither is asked again. The backups stay.
func testDeletesRefused(t *testing.T, bs []desttest.Backup) {
	denied := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodDelete {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
		return true
	}
	cases := []struct {
		name    string
		deletes bool
		fault   func(http.ResponseWriter, *http.Request) bool
		code    int
		says    string
	}{
		{"deletes disabled", false, nil, exitcode.Failure, "REGISTRY_STORAGE_DELETE_ENABLED=true"},
		{"credentials that may not delete", true, denied, exitcode.Usage, "may delete"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := ocitest.Start(t, ocitest.Options{Deletes: c.deletes}).NewProxy(t)
			var deletes atomic.Int32
			p.Fault = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodDelete {
					deletes.Add(1)
				}
				return c.fault != nil && c.fault(w, r)
			}
			d := openDest(t, "docker://"+p.Host+"/backups/nodelete", destination.RegistryOptions{InsecureSkipTLSVerify: true})
			for _, b := range bs[:2] {
				if _, err := destination.UploadDir(t.Context(), d, b.Dir, nil); err != nil {
					t.Fatal(err)
				}
			}
			_, err := destination.Prune(t.Context(), d, destination.Policy{KeepLast: 1}, "", time.Now(), false)
			if exitcode.Of(err) != c.code || !strings.Contains(err.Error(), c.says) || strings.Contains(err.Error(), "\n") {
				t.Errorf("prune = %v (exit %d), want one line saying %q, exit %d", err, exitcode.Of(err), c.says, c.code)
			}
			if n := deletes.Load(); n != 1 {
				t.Errorf("the registry was asked to delete %d times, want once: a refusal is not retried", n)
			}
			if entries, _ := d.List(t.Context()); len(entries) != 2 {
				t.Errorf("after a refused prune %d backups are listed, want 2", len(entries))
			}
		})
	}
}

// testFilesTogether: the other blobs of a backup (the archive, and
// backup.json and the config, whose content is known before the snapshot
// has gone) are stored while the snapshot is sent, so that their round
// trips do not add to its time. The proxy holds the snapshot's data until
// three other blobs are stored, which never happens when they wait for it
// (the hold ends before the stall timeout, which would send it again).
func testFilesTogether(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{})
	p := reg.NewProxy(t)
	snapshot := bs[0].Manifest.File(manifest.KindSnapshot).Size
	others := make(chan struct{}, 3)
	p.Fault = func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case r.Method == http.MethodPatch && blobData(r) && r.ContentLength == snapshot:
			for range 3 {
				select {
				case <-others:
				case <-time.After(3 * time.Second):
					t.Error("the snapshot's data was held for 3s and fewer than three other blobs were stored meanwhile: they wait for the snapshot")
					return false
				}
			}
		case r.Method == http.MethodPut && blobData(r):
			reg.Handler.ServeHTTP(w, r)
			select {
			case others <- struct{}{}:
			default:
			}
			return true
		}
		return false
	}
	d := openDest(t, "docker://"+p.Host+"/backups/together", destination.RegistryOptions{InsecureSkipTLSVerify: true})
	if _, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil); err != nil {
		t.Fatal(err)
	}
}

// testListTogether: List reads the tags' manifests at once. A proxy holds
// the first manifest until another is asked for.
func testListTogether(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{})
	ro := destination.RegistryOptions{InsecureSkipTLSVerify: true}
	for _, b := range bs {
		if _, err := destination.UploadDir(t.Context(), openDest(t, reg.URL("backups/listed"), ro), b.Dir, nil); err != nil {
			t.Fatal(err)
		}
	}
	p := reg.NewProxy(t)
	var manifests atomic.Int32
	another := make(chan struct{})
	p.Fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		switch manifests.Add(1) {
		case 1:
			select {
			case <-another:
			case <-time.After(3 * time.Second):
				t.Error("the first manifest was held for 3s and no other was asked for meanwhile: List reads the tags one after the other")
			}
		case 2:
			close(another)
		}
		return false
	}
	entries, err := openDest(t, "docker://"+p.Host+"/backups/listed", ro).List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(bs) {
		t.Fatalf("List found %d backups, want %d", len(entries), len(bs))
	}
	for i, e := range entries {
		if e.State != destination.Complete || !slices.ContainsFunc(bs, func(b desttest.Backup) bool { return oci.Tag(b.Manifest) == e.Name }) {
			t.Errorf("entry %d = %s (%s), want one of the uploaded backups, complete", i, e.Name, e.State)
		}
		if i > 0 && destination.Compare(entries[i-1], e) >= 0 {
			t.Errorf("entries %d and %d are out of order or the same: %s after %s", i-1, i, e.Name, entries[i-1].Name)
		}
	}
}

// testArtifactRefused: a registry that takes only images refuses the
// artifact's manifest (MANIFEST_INVALID, as such mirrors answer; injected
// at a proxy, since distribution takes artifacts). The upload fails at
// once with a usage error naming --oci-format image, and that form, which
// the proxy lets through, is stored.
func testArtifactRefused(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{})
	p := reg.NewProxy(t)
	var refused atomic.Int32
	p.Fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		if !bytes.Contains(body, []byte(`"artifactType"`)) {
			r.Body = io.NopCloser(bytes.NewReader(body))
			return false
		}
		refused.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"unknown media type"}]}`)
		return true
	}
	url := "docker://" + p.Host + "/backups/images-only"
	_, err := destination.UploadDir(t.Context(), openDest(t, url, destination.RegistryOptions{InsecureSkipTLSVerify: true}), bs[0].Dir, nil)
	if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "--oci-format image") || refused.Load() != 1 {
		t.Fatalf("upload of an artifact to a registry that takes only images = %v (exit %d), %d manifests refused; want exit %d naming --oci-format image, at the first refusal", err, exitcode.Of(err), refused.Load(), exitcode.Usage)
	}
	image := openDest(t, url, destination.RegistryOptions{InsecureSkipTLSVerify: true, Format: destination.FormatImage})
	if _, err := destination.UploadDir(t.Context(), image, bs[0].Dir, nil); err != nil {
		t.Fatalf("upload with --oci-format image: %v", err)
	}
}

// testBodyTooLarge: a proxy in front of the registry that takes request
// bodies of a limited size (nginx's client_max_body_size, 1 MiB unless set;
// ingress-nginx's proxy-body-size) answers a larger blob with 413 and an
// HTML page, as nginx does, without reading it. The upload, clear or
// encrypted (sent without a length), fails at the first refusal with a
// usage error that names the limit to raise, and nothing counts as
// complete.
func testBodyTooLarge(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{})
	key := desttest.AgeKey(t)
	for i, encrypt := range []bool{false, true} {
		p := reg.NewProxy(t)
		const limit = 4 << 10
		var refused atomic.Int32
		p.Fault = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodPatch || !blobData(r) || (r.ContentLength >= 0 && r.ContentLength <= limit) {
				return false
			}
			refused.Add(1)
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			io.WriteString(w, "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
			return true
		}
		var to *encryption.Recipients
		if encrypt {
			to = desttest.Recipients(t, key)
		}
		d := openDest(t, "docker://"+p.Host+"/backups/limited"+strconv.Itoa(i), destination.RegistryOptions{InsecureSkipTLSVerify: true})
		_, err := destination.UploadDir(t.Context(), d, bs[0].Dir, to)
		if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "client_max_body_size") || strings.Contains(err.Error(), "\n") {
			t.Errorf("upload (encrypted: %v) through a proxy that refuses large bodies = %v (exit %d); want one line naming the limit to raise, exit %d", encrypt, err, exitcode.Of(err), exitcode.Usage)
		}
		if n := refused.Load(); n < 1 || n > 2 {
			t.Errorf("the proxy refused %d blobs (encrypted: %v); want the upload to stop at the first refusal, not retry", n, encrypt)
		}
		if entries, _ := d.List(t.Context()); len(entries) != 0 {
			t.Errorf("after a refused upload (encrypted: %v) %d backups are listed, want none", encrypt, len(entries))
		}
	}
}

// testQuotaFull: a registry whose quota is full (Quay and Harbor answer a
// push past it with DENIED, as for a repository the credentials may not
// write) ends the upload at the first refusal with the registry's reason
// and what to do about a quota, where it sent the administrator only after
// credentials; nothing counts as complete.
func testQuotaFull(t *testing.T, bs []desttest.Backup) {
	reg := ocitest.Start(t, ocitest.Options{})
	p := reg.NewProxy(t)
	var refused atomic.Int32
	p.Fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/blobs/uploads/") {
			return false
		}
		refused.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"errors":[{"code":"DENIED","message":"Quota has been exceeded on namespace","detail":{}}]}`)
		return true
	}
	d := openDest(t, "docker://"+p.Host+"/backups/quota", destination.RegistryOptions{InsecureSkipTLSVerify: true})
	_, err := destination.UploadDir(t.Context(), d, bs[0].Dir, nil)
	if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "Quota has been exceeded on namespace") || !strings.Contains(err.Error(), "prune old backups") {
		t.Errorf("upload to a registry whose quota is full = %v (exit %d); want exit %d with the registry's reason and prune named", err, exitcode.Of(err), exitcode.Usage)
	}
	// The blobs go up side by side: each may be refused once, none twice.
	if n := refused.Load(); n < 1 || n > 4 {
		t.Errorf("the registry refused %d blob uploads; want at most one for each of the 4 blobs, none retried", n)
	}
	if entries, _ := d.List(t.Context()); len(entries) != 0 {
		t.Errorf("after a refused upload %d backups are listed, want none", len(entries))
	}
}

// testDetours: a registry whose token service (the realm of its
// WWW-Authenticate challenge) does not answer, or refuses connections,
// fails list, download and upload with an error that names that host and
// what the registry sends clients there for, not the registry; so does a
// download redirected to blob storage that refuses it. A request
// that gets no answer at all is asked twice, not five times: list asks the
// silent service twice, upload sends each file at most twice. Before, each
// was asked five times (5 min 15 s at the default stall timeout), and the
// error named only the token URL.
func testDetours(t *testing.T, bs []desttest.Backup) {
	reg, url, res := uploaded(t, bs[0].Dir, "backups/token")
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	go func() {
		var held []net.Conn // accepted, never answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			asked.Add(1)
			held = append(held, c)
		}
	}()
	t.Cleanup(func() { silent.Close() })
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := closed.Addr().String()
	closed.Close()
	download := func(ctx context.Context, d destination.Dest) error {
		_, err := destination.Download(ctx, d, res.Name, filepath.Join(t.TempDir(), "down"), nil)
		return err
	}
	list := func(ctx context.Context, d destination.Dest) error {
		_, err := d.List(ctx)
		return err
	}
	cases := []struct {
		name  string
		realm string
		run   func(context.Context, destination.Dest) error
		asks  int32 // of the silent service; 0 to leave uncounted
	}{
		{"silent, list", silent.Addr().String(), list, 2},
		{"silent, download", silent.Addr().String(), download, 2},
		{"refusing, list", refusing, list, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := reg.NewProxy(t)
			p.Fault = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Header.Get("Authorization") != "" {
					return false
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+c.realm+`/token",service="registry"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return true
			}
			d := throughProxy(t, url, reg, p)
			before := asked.Load()
			err := c.run(t.Context(), d)
			want := c.realm + ", where the registry sends this client for a token (its token service), is the host that fails"
			if err == nil || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), want) != 1 || exitcode.Of(err) != exitcode.Failure {
				t.Errorf("%v (exit %d); want exit 1 saying %q once", err, exitcode.Of(err), want)
			}
			if got := asked.Load() - before; c.asks != 0 && got != c.asks {
				t.Errorf("the silent token service was asked %d times, want %d", got, c.asks)
			}
		})
	}
	t.Run("refusing blob storage, download", func(t *testing.T) {
		snapshot := bs[0].Manifest.File(manifest.KindSnapshot).SHA256
		p := reg.NewProxy(t)
		p.Fault = ocitest.RedirectBlob(snapshot, "http://"+refusing+"/blob?X-Amz-Signature=s")
		err := download(t.Context(), throughProxy(t, url, reg, p))
		want := refusing + ", where the registry sends this client for a blob's bytes (the storage it serves them from), is the host that fails"
		if err == nil || !strings.Contains(err.Error(), want) || exitcode.Of(err) != exitcode.Failure {
			t.Errorf("%v (exit %d); want exit 1 saying %q", err, exitcode.Of(err), want)
		}
	})
	t.Run("silent registry, upload", func(t *testing.T) {
		var posts atomic.Int32
		p := reg.NewProxy(t)
		p.Fault = func(_ http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodPost {
				return false
			}
			posts.Add(1)
			select {
			case <-r.Context().Done():
			case <-t.Context().Done():
			}
			return true
		}
		o := options(t, destination.RegistryOptions{InsecureSkipTLSVerify: true})
		o.StallTimeout = 300 * time.Millisecond
		d, err := kinds().Open(t.Context(), "docker://"+p.Host+"/backups/unanswered", o)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, err = destination.UploadDir(t.Context(), d, bs[0].Dir, nil)
		if err == nil || !strings.Contains(err.Error(), "no answer within the stall timeout") {
			t.Errorf("upload to a registry that never answers a new upload = %v; want no answer within the stall timeout", err)
		}
		// Each file, backup.json and the config: at most two attempts each.
		if most := 2 * int32(len(bs[0].Manifest.Files)+2); posts.Load() > most {
			t.Errorf("the registry was asked to start %d uploads, want at most %d", posts.Load(), most)
		}
	})
}
