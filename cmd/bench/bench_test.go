package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"hash/crc32"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"
)

func TestParseSizes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []int64
		wantErr bool
	}{
		{in: "256MiB,1GiB", want: []int64{256 << 20, 1 << 30}},
		{in: "4096, 512KiB", want: []int64{4096, 512 << 10}},
		{in: "1GiB,256MiB", wantErr: true},
		{in: "1GB", wantErr: true},
		{in: "0MiB", wantErr: true},
		{in: "", wantErr: true},
	} {
		got, err := parseSizes(tc.in)
		if (err != nil) != tc.wantErr || fmt.Sprint(got) != fmt.Sprint(tc.want) && !tc.wantErr {
			t.Errorf("parseSizes(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                string
		start, end, total int64
		wantErr           bool
	}{
		{in: "bytes 0-999/*", start: 0, end: 999, total: -1},
		{in: "bytes 1000-1999/2000", start: 1000, end: 1999, total: 2000},
		{in: "bytes */2600", start: -1, end: -1, total: 2600},
		{in: "bytes 5-/10", wantErr: true},
		{in: "items 0-1/2", wantErr: true},
		{in: "bytes 0-1", wantErr: true},
	} {
		start, end, total, err := parseContentRange(tc.in)
		if (err != nil) != tc.wantErr || !tc.wantErr && (start != tc.start || end != tc.end || total != tc.total) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, error %v",
				tc.in, start, end, total, err, tc.start, tc.end, tc.total, tc.wantErr)
		}
	}
}

func TestStatusBytes(t *testing.T) {
	status := []byte("Name:\tx\nVmHWM:\t   2048 kB\nRssAnon:\t    512 kB\n")
	for key, want := range map[string]int64{"VmHWM:": 2 << 20, "RssAnon:": 512 << 10, "RssFile:": 0} {
		if got := statusBytes(status, key); got != want {
			t.Errorf("statusBytes(%s) = %d, want %d", key, got, want)
		}
	}
}

// progressLine is one line of a save's JSON log, at ms after start.
type progressLine struct {
	ms   int
	msg  string
	done int64
}

func jsonLog(start time.Time, lines ...progressLine) []byte {
	var b strings.Builder
	for _, l := range lines {
		at := start.Add(time.Duration(l.ms) * time.Millisecond).Format(time.RFC3339Nano)
		fmt.Fprintf(&b, `{"time":%q,"level":"INFO","msg":%q,"done":%d}`+"\n", at, l.msg, l.done)
	}
	b.WriteString("not json\n")
	return []byte(b.String())
}

var (
	logStart  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	logBefore = []progressLine{{10, "using etcd member", 0}, {30, "preflight checks passed", 0}}
	logAfter  = []progressLine{
		{500, "Snapshot saved at /b/snapshot_x.db", 0},
		{510, "snapshot db and kube resources are successfully saved to /b", 0},
	}
)

func saveLog(progress ...progressLine) []byte {
	return jsonLog(logStart, slices.Concat(logBefore, progress, logAfter)...)
}

func TestParsePhases(t *testing.T) {
	p := parsePhases(saveLog(progressLine{130, "snapshot: 1.0 MiB", 1 << 20}), logStart, logStart.Add(520*time.Millisecond))
	want := [phaseCount]time.Duration{10, 20, 470, 10, 10}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !p.ok || p.d != want {
		t.Errorf("parsePhases = %v, want %v", p, want)
	}
	if p := parsePhases([]byte("{}\n"), logStart, logStart); p.ok {
		t.Errorf("parsePhases of a log without markers = %v, want not ok", p)
	}
}

func TestParseStreamEnd(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name     string
		progress []progressLine
		size     int64
		end      time.Duration // 0: not ok
	}{
		{
			name:     "extrapolated from the last two lines",
			progress: []progressLine{{130, "snapshot: 1", mib}, {230, "snapshot: 2", 2 * mib}},
			size:     4 * mib,
			end:      430 * time.Millisecond,
		},
		{
			name:     "interpolated before the first full line",
			progress: []progressLine{{130, "snapshot: 1", mib}, {230, "snapshot: 2", 2 * mib}, {330, "snapshot: 3", 3 * mib}, {430, "snapshot: 3", 3 * mib}},
			size:     5 * mib / 2,
			end:      280 * time.Millisecond,
		},
		{
			name:     "capped by the first full line",
			progress: []progressLine{{100, "snapshot: 1", mib}, {200, "snapshot: 1.1", mib + mib/10}, {300, "snapshot: 4", 4 * mib}},
			size:     4 * mib,
			end:      300 * time.Millisecond,
		},
		{
			name:     "full on the second line",
			progress: []progressLine{{100, "snapshot: 1", mib}, {200, "snapshot: 4", 4 * mib}},
			size:     4 * mib,
			end:      200 * time.Millisecond,
		},
		{name: "one line", progress: []progressLine{{100, "snapshot: 1", mib}}, size: 4 * mib},
	} {
		s := parseStreamEnd(saveLog(tc.progress...), logStart, tc.size)
		if s.ok != (tc.end != 0) || s.end != tc.end || s.ok && (s.preflight != 30*time.Millisecond || s.saved != 500*time.Millisecond) {
			t.Errorf("%s: parseStreamEnd = %+v, want end %s, preflight 30ms, saved 500ms", tc.name, s, tc.end)
		}
	}
}

func TestMeasure(t *testing.T) {
	var out bytes.Buffer
	u, err := measure(t.Context(), command{path: "sh", args: []string{"-c", "head -c 1000000 /dev/zero | wc -c"}, env: os.Environ()}, &out)
	if err != nil || u.wall <= 0 || strings.TrimSpace(out.String()) != "1000000" {
		t.Errorf("measure = %+v, %v, output %q", u, err, out.String())
	}
	out.Reset()
	_, err = measure(t.Context(), command{path: "sh", args: []string{"-c", "echo boom; exit 3"}}, &out)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("measure of a failing command: error %v, want one carrying its output", err)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestJoiner sends objects in many chunks through the joiner to a real
// emulator and checks that each arrives whole, in one request.
func TestJoiner(t *testing.T) {
	ctx := t.Context()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", StorageRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: benchBucket})
	// Count the upload requests that reach the emulator.
	var chunks atomic.Int32
	backend, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(backend)
	counter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("upload_id") {
			chunks.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(counter.Close)
	j, endpoint, err := startJoiner(counter.URL, filepath.Join(t.TempDir(), "chunks"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.close)
	client, err := storage.NewClient(ctx, option.WithEndpoint(endpoint+"/storage/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })

	for _, tc := range []struct {
		size, chunk int
		requests    int32 // chunks the emulator sees
	}{
		{1 << 20, 256 << 10, 1}, // more than one chunk, ending on a boundary or not
		{3<<20 + 17, 256 << 10, 1},
		{3<<20 + 17, 0, 0}, // one multipart request, passed through
	} {
		chunks.Store(0)
		data := make([]byte, tc.size)
		rand.Read(data)
		name := fmt.Sprintf("p/o-%d-%d", tc.size, tc.chunk)
		obj := client.Bucket(benchBucket).Object(name)
		w := obj.NewWriter(ctx)
		w.ChunkSize = tc.chunk
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("upload %s: %v", name, err)
		}
		attrs, err := obj.Attrs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if attrs.Size != int64(tc.size) || attrs.CRC32C != crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)) {
			t.Errorf("%s: %d bytes sent, %d stored, or with another CRC32C", name, tc.size, attrs.Size)
		}
		if n := chunks.Load(); n != tc.requests {
			t.Errorf("%s reached the emulator in %d chunk requests, want %d", name, n, tc.requests)
		}
		if h, ok := j.took("p/", path.Base(name)); !ok || h.send <= 0 || h.store <= 0 {
			t.Errorf("%s: timing %+v, %v; want both parts timed", name, h, ok)
		}
	}
	if n := len(j.parts); n != 0 {
		t.Errorf("joiner holds %d unfinished uploads, want 0", n)
	}
}
