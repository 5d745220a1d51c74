// Package gcstest runs a Cloud Storage emulator (fake-gcs-server) over HTTP
// on loopback, and a reverse proxy in front of it that injects what the
// emulator cannot do on demand: error statuses, connection resets in the
// middle of a request, stalled responses, and object attributes such as
// holds. Tests, the demo and the benchmarks share it.
package gcstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// Server is a running emulator. The embedded fakestorage.Server creates,
// reads and replaces objects behind the client's back.
type Server struct {
	*fakestorage.Server
}

// Start starts an emulator on 127.0.0.1 holding the given empty buckets.
func Start(buckets ...string) (*Server, error) {
	s, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme: "http",
		Host:   "127.0.0.1",
		Writer: io.Discard,
	})
	if err != nil {
		return nil, fmt.Errorf("start Cloud Storage emulator: %w", err)
	}
	for _, b := range buckets {
		s.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	return &Server{Server: s}, nil
}

// New starts an emulator for the duration of a test.
func New(t testing.TB, buckets ...string) *Server {
	t.Helper()
	s, err := Start(buckets...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Objects lists every object in bucket.
func (s *Server) Objects(bucket string) ([]fakestorage.ObjectAttrs, error) {
	l, err := s.ListObjectsWithOptionsPaginated(bucket, fakestorage.ListOptions{})
	return l.Objects, err
}

// Host is the value for $STORAGE_EMULATOR_HOST.
func (s *Server) Host() string { return strings.TrimPrefix(s.URL(), "http://") }

// DeadHost returns a loopback host:port that nothing listens on: an
// emulator that is down.
func DeadHost(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	return host
}

// BlackHole returns a loopback host:port that accepts connections and
// never reads from them nor answers, until the test ends: an endpoint
// behind a broken load balancer or firewall.
func BlackHole(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// Action answers a request in place of the emulator.
type Action func(w http.ResponseWriter, r *http.Request)

// Fault applies Do to requests that Match selects: the first Times of
// them, or all when Times is 0.
type Fault struct {
	Match func(r *http.Request) bool
	Times int
	Do    Action
}

// Proxy forwards to a Server, applying faults first.
type Proxy struct {
	srv  *httptest.Server
	next http.Handler // the emulator, through the reverse proxy

	mu       sync.Mutex
	faults   []*fault
	rewrite  func(obj map[string]any)
	requests []string
}

type fault struct {
	Fault
	hits int
}

// NewProxy starts a proxy in front of target for the duration of a test.
func NewProxy(t testing.TB, target *Server) *Proxy {
	t.Helper()
	u, err := url.Parse(target.URL())
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			// The emulator builds resumable upload URLs from the Host it
			// was asked for: keep them pointing at the proxy.
			pr.Out.Host = pr.In.Host
		},
		ModifyResponse: p.modifyResponse,
		// Clients that give up mid-request are what the faults cause.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.next = rp
	p.srv = httptest.NewServer(p.handler(rp))
	t.Cleanup(func() {
		// Stalled requests end when their connection does.
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
	return p
}

// Host is the value for $STORAGE_EMULATOR_HOST.
func (p *Proxy) Host() string { return p.srv.Listener.Addr().String() }

// Add installs a fault; faults are tried in the order added.
func (p *Proxy) Add(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &fault{Fault: f})
}

// RewriteObjects edits every object resource the emulator returns, alone
// or in a listing, before the client sees it: how tests give objects
// attributes the emulator does not keep, such as holds.
func (p *Proxy) RewriteObjects(fn func(obj map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rewrite = fn
}

// Requests returns "METHOD /path" of every request received so far.
func (p *Proxy) Requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.requests...)
}

func (p *Proxy) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if do := p.match(r); do != nil {
			do(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (p *Proxy) match(r *http.Request) Action {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, r.Method+" "+r.URL.Path)
	for _, f := range p.faults {
		if (f.Match == nil || f.Match(r)) && (f.Times == 0 || f.hits < f.Times) {
			f.hits++
			return f.Do
		}
	}
	return nil
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	p.mu.Lock()
	rewrite := p.rewrite
	p.mu.Unlock()
	if rewrite == nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	var doc map[string]any
	if json.Unmarshal(body, &doc) == nil {
		switch doc["kind"] {
		case "storage#object":
			rewrite(doc)
		case "storage#objects":
			items, _ := doc["items"].([]any)
			for _, it := range items {
				if obj, ok := it.(map[string]any); ok {
					rewrite(obj)
				}
			}
		}
		if out, err := json.Marshal(doc); err == nil {
			body = out
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// IsUpload matches the requests of an upload: the one that starts it and
// those that carry its data.
func IsUpload(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/upload/") }

// IsUploadData matches the requests that carry an upload's data.
func IsUploadData(r *http.Request) bool {
	q := r.URL.Query()
	return IsUpload(r) && (q.Has("upload_id") || q.Get("uploadType") == "multipart")
}

// IsDelete returns a matcher of requests that delete the named object.
func IsDelete(name string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodDelete && strings.HasSuffix(r.URL.Path, "/o/"+name)
	}
}

// Status answers with an HTTP status and a JSON error body, as GCS does.
func Status(code int) Action {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":"injected %s"}}`, code, http.StatusText(code))
	}
}

// Reset reads up to n bytes of the request body, then resets the
// connection, as a dropped network path does in the middle of an upload.
func Reset(n int64) Action {
	return func(w http.ResponseWriter, r *http.Request) {
		io.CopyN(io.Discard, r.Body, n)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(fmt.Sprintf("gcstest: hijack: %v", err))
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST rather than FIN
		}
		conn.Close()
	}
}

// LoseAnswer lets the emulator carry out the request, then resets the
// connection instead of answering: a request that took effect although its
// client saw it fail.
func (p *Proxy) LoseAnswer() Action {
	return func(w http.ResponseWriter, r *http.Request) {
		p.next.ServeHTTP(httptest.NewRecorder(), r)
		Reset(0)(w, r)
	}
}

// ChangeBytes passes the request on with one byte in the middle of its
// body changed: data damaged on the way, which the service stores as sent.
func (p *Proxy) ChangeBytes() Action {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			Reset(0)(w, r)
			return
		}
		if len(body) > 0 {
			body[len(body)/2] ^= 0xff
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		p.next.ServeHTTP(w, r)
	}
}

// Hang neither reads the request body nor answers until the test ends: a
// connection that went quiet.
func Hang(t testing.TB) Action {
	return func(http.ResponseWriter, *http.Request) { <-t.Context().Done() }
}

// Stall reads the request, calls started, then holds it without answering
// until the client gives up: a server that stopped responding.
func Stall(started func()) Action {
	return func(w http.ResponseWriter, r *http.Request) {
		// The server notices a client going away only once the body is read.
		io.Copy(io.Discard, r.Body)
		if started != nil {
			started()
		}
		<-r.Context().Done()
	}
}
