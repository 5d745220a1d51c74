package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// joiner sits in front of the emulator and collects the chunks of resumable
// uploads on disk, handing each upload to the emulator in one request once
// its last chunk arrives; every other request passes through.
//
// fake-gcs-server recomputes the MD5 and CRC32C of everything received so
// far on every chunk, so an upload in 16 MiB chunks costs time quadratic in
// its size (minutes for 1 GiB on two cores): through it directly, the bench
// would measure the emulator's hashing rather than the clients. The clients
// still speak the whole resumable protocol, to the joiner, and the emulator
// still checks preconditions and checksums and stores the object.
//
// It also times each upload (see handover): the emulator's share of an
// upload's wall time dwarfs the client's, and varies from run to run.
type joiner struct {
	dir   string
	proxy *httputil.ReverseProxy
	srv   *http.Server

	mu      sync.Mutex
	parts   map[string]*os.File  // by upload_id
	started map[string]time.Time // first chunk's arrival, by upload_id
	timed   map[string]handover  // by object name, until taken
}

// handover splits the time of one upload, as the joiner sees it: send runs
// from its first data request to the end of its data, store from there to
// the emulator's answer.
type handover struct {
	send, store time.Duration
}

// startJoiner serves on a loopback port in front of backend and returns
// its URL. The emulator builds session URLs from the request's Host, which
// the proxy keeps, so every chunk comes back here.
func startJoiner(backend, dir string) (*joiner, string, error) {
	u, err := url.Parse(backend)
	if err != nil {
		return nil, "", err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create upload joiner directory: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("listen for the upload joiner: %w", err)
	}
	j := &joiner{
		dir:     dir,
		proxy:   httputil.NewSingleHostReverseProxy(u),
		parts:   map[string]*os.File{},
		started: map[string]time.Time{},
		timed:   map[string]handover{},
	}
	j.srv = &http.Server{Handler: j}
	go j.srv.Serve(l) // returns when close shuts it down
	return j, "http://" + l.Addr().String(), nil
}

func (j *joiner) close() {
	j.srv.Close()
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, f := range j.parts {
		f.Close()
	}
}

// uploadID matches the IDs fake-gcs-server generates, so they are safe as
// file names.
var uploadID = regexp.MustCompile(`^[0-9a-fA-F]{1,64}$`)

func (j *joiner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("upload_id")
	cr := r.Header.Get("Content-Range")
	// Chunks come as PUT, or as POST from the Go client.
	if (r.Method != http.MethodPut && r.Method != http.MethodPost) || id == "" || cr == "" {
		if r.URL.Query().Get("uploadType") != "multipart" {
			j.proxy.ServeHTTP(w, r)
			return
		}
		// A whole upload in one request: its data ends with its body.
		start := time.Now()
		body := &endTimer{ReadCloser: r.Body}
		r.Body = body
		j.proxy.ServeHTTP(w, r)
		j.time(r, start, body.end)
		return
	}
	if !uploadID.MatchString(id) {
		http.Error(w, "bad upload_id", http.StatusBadRequest)
		return
	}
	start, end, total, err := parseContentRange(cr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f, first, err := j.part(id)
	if err == nil && start >= 0 {
		_, err = io.Copy(io.NewOffsetWriter(f, start), r.Body)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if total < 0 {
		incomplete(w, r, end)
		return
	}
	// The last chunk: send the whole upload as one.
	j.forget(id)
	defer f.Close()
	sent := time.Now()
	r.Body = io.NopCloser(io.NewSectionReader(f, 0, total))
	r.ContentLength = total
	r.Header.Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", total-1, total))
	j.proxy.ServeHTTP(w, r)
	j.time(r, first, sent)
}

// time records an upload whose data arrived from start to sent and which
// the emulator has just answered.
func (j *joiner) time(r *http.Request, start, sent time.Time) {
	if sent.IsZero() { // the body was never read to its end: no upload
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.timed[r.URL.Query().Get("name")] = handover{send: sent.Sub(start), store: time.Since(sent)}
}

// took returns the timing of the upload of the object below prefix whose
// name ends in base, and forgets every timing below prefix.
func (j *joiner) took(prefix, base string) (h handover, ok bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for name, t := range j.timed {
		if strings.HasPrefix(name, prefix) {
			if strings.HasSuffix(name, "/"+base) {
				h, ok = t, true
			}
			delete(j.timed, name)
		}
	}
	return h, ok
}

// endTimer notes when its body has been read to the end.
type endTimer struct {
	io.ReadCloser
	end time.Time
}

func (e *endTimer) Read(p []byte) (int, error) {
	n, err := e.ReadCloser.Read(p)
	if err != nil && e.end.IsZero() {
		e.end = time.Now()
	}
	return n, err
}

// incomplete answers a chunk that is not the last, as the emulator does.
func incomplete(w http.ResponseWriter, r *http.Request, end int64) {
	w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", end))
	if _, no308 := r.Header["X-Guploader-No-308"]; no308 {
		// The Go client cannot see a bare 308.
		w.Header().Set("X-Http-Status-Code-Override", "308")
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusPermanentRedirect)
}

// part returns the file collecting upload id, creating it on first use,
// and when its first chunk arrived.
func (j *joiner) part(id string) (*os.File, time.Time, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if f, ok := j.parts[id]; ok {
		return f, j.started[id], nil
	}
	f, err := os.CreateTemp(j.dir, id+"-*")
	if err != nil {
		return nil, time.Time{}, err
	}
	// Unlinked now, the file's space goes when it is closed.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, time.Time{}, err
	}
	j.parts[id], j.started[id] = f, time.Now()
	return f, j.started[id], nil
}

func (j *joiner) forget(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.parts, id)
	delete(j.started, id)
}

// parseContentRange reads "bytes A-B/T", "bytes A-B/*" or "bytes */T";
// start is -1 for "*" and total -1 when not yet known.
func parseContentRange(s string) (start, end, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", s)
	rng, tot, ok := strings.Cut(strings.TrimPrefix(s, "bytes "), "/")
	if !ok || !strings.HasPrefix(s, "bytes ") {
		return 0, 0, 0, bad
	}
	start, end, total = -1, -1, -1
	if rng != "*" {
		a, b, ok := strings.Cut(rng, "-")
		var ea, eb error
		start, ea = strconv.ParseInt(a, 10, 64)
		end, eb = strconv.ParseInt(b, 10, 64)
		if !ok || errors.Join(ea, eb) != nil {
			return 0, 0, 0, bad
		}
	}
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, 0, bad
		}
	}
	return start, end, total, nil
}
