package desttest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/destination"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/manifest"
	"github.com/etcd-backup/etcd-backup/internal/verify"
)

// Harness opens the destination under test.
type Harness struct {
	// New returns an empty destination; each call a different one.
	New func(t *testing.T) destination.Dest
	// Foreign stores in d, under a name list would consider, something
	// this tool did not write, and returns that name.
	Foreign func(t *testing.T, d destination.Dest, like *manifest.Backup) string
	// Tamper changes a byte of what res.Files says holds file f, where
	// it rests; a second call changes it back.
	Tamper func(t *testing.T, res destination.Result, f manifest.File)
	// OneBlob is set for a kind that stores a backup's files together, at
	// Commit (the OCI image form): Put only takes the file's opener, and
	// the backup cannot be stored encrypted.
	OneBlob bool
}

// Run runs the conformance suite over backups from Save.
func Run(t *testing.T, h Harness, backups []Backup) {
	tests := []struct {
		name string
		run  func(*testing.T, Harness, []Backup)
	}{
		{"UploadListLatest", testUploadListLatest},
		{"RerunSendsNothing", testRerun},
		{"DownloadVerify", testDownloadVerify},
		{"CorruptFileRefused", testCorruptRefused},
		{"InterruptedUploadIsNotComplete", testInterrupted},
		{"PruneKeepsNewestAndForeign", testPrune},
		{"PruneBesideAnother", testPruneBesideAnother},
		{"Encrypted", testEncrypted},
		{"EncryptedRerunAfterKill", testEncryptedAfterKill},
		{"StoredBytesChanged", testTampered},
		{"LatestSkipsBad", testLatestSkipsBad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, h, backups) })
	}
}

func upload(t *testing.T, d destination.Dest, b Backup) destination.Result {
	t.Helper()
	res, err := destination.UploadDir(t.Context(), d, b.Dir, nil)
	if err != nil {
		t.Fatalf("upload %s: %v", b.Dir, err)
	}
	return res
}

func list(t *testing.T, d destination.Dest) []destination.Entry {
	t.Helper()
	entries, err := d.List(t.Context())
	if err != nil {
		t.Fatalf("list %s: %v", d.URL(), err)
	}
	return entries
}

func names(entries []destination.Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Name+" "+string(e.State))
	}
	return out
}

func testUploadListLatest(t *testing.T, h Harness, bs []Backup) {
	d := h.New(t)
	var want []string
	byName := map[string]Backup{}
	for _, b := range bs {
		res := upload(t, d, b)
		want = append(want, res.Name+" complete")
		byName[res.Name] = b
	}
	entries := list(t, d)
	got := names(entries)
	if !slices.IsSortedFunc(entries, destination.Compare) || !sameSet(got, want) {
		t.Fatalf("list = %q, want %q oldest first, no name shared", got, want)
	}
	for _, e := range entries {
		b := byName[e.Name].Manifest
		if !e.Ours || e.Manifest == nil || e.ClusterID != b.ClusterKey() || e.Timestamp != b.Timestamp {
			t.Errorf("entry %+v, want ours with cluster %s, ts %s and its manifest", e, b.ClusterKey(), b.Timestamp)
		}
	}
	found, err := destination.Newest(t.Context(), d, "", Log(t))
	if err != nil {
		t.Fatal(err)
	}
	good := found.Complete
	newestFirst := names(entries)
	slices.Reverse(newestFirst)
	if got := names(good); !slices.Equal(got, newestFirst) {
		t.Errorf("newest = %q, want every one, newest first: %q", got, newestFirst)
	}
	// A cluster ID given wrong: the answer names the clusters there are.
	_, err = destination.Newest(t.Context(), d, "no-such-cluster", Log(t))
	if want := "which holds backups of " + entries[0].ClusterID + " only"; !errors.Is(err, destination.ErrNoBackup) || err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("newest of another cluster = %v, want %v saying %q", err, destination.ErrNoBackup, want)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// counting opens a backup's files and counts the opens.
func counting(dir string, opens *int) func(f manifest.File) destination.Opener {
	return func(f manifest.File) destination.Opener {
		return func() (io.ReadCloser, error) {
			*opens++
			return os.Open(filepath.Join(dir, f.Name))
		}
	}
}

func testRerun(t *testing.T, h Harness, bs []Backup) {
	d := h.New(t)
	first := upload(t, d, bs[0])
	up, err := d.Begin(t.Context(), bs[0].Manifest)
	if err != nil {
		t.Fatalf("begin a re-run: %v", err)
	}
	defer up.Close()
	opens := 0
	for _, f := range bs[0].Manifest.Files {
		_, reused, err := up.Put(t.Context(), f, counting(bs[0].Dir, &opens)(f))
		if err != nil || !reused {
			t.Errorf("re-run put %s = %v, %v; want reused", f.Name, reused, err)
		}
	}
	again, err := up.Commit(t.Context(), bs[0].Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if opens != 0 || !reflect.DeepEqual(again, first) {
		t.Errorf("re-run opened %d files and committed %+v; want none opened and %+v", opens, again, first)
	}
	if got := list(t, d); len(got) != 1 {
		t.Errorf("after a re-run list = %q, want one backup", names(got))
	}
}

func testDownloadVerify(t *testing.T, h Harness, bs []Backup) {
	d := h.New(t)
	res := upload(t, d, bs[1])
	if _, err := destination.Verify(t.Context(), d, res.Name, verify.Options{Log: Log(t)}, nil); err != nil {
		t.Fatalf("verify stored backup: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "download")
	if _, err := destination.Download(t.Context(), d, res.Name, dir, nil); err != nil {
		t.Fatalf("download: %v", err)
	}
	if _, err := verify.Dir(t.Context(), dir, verify.Options{Log: Log(t)}); err != nil {
		t.Fatalf("verify downloaded directory: %v", err)
	}
	sameFiles(t, bs[1].Dir, dir)
	// A re-run into the same directory is told apart from a directory in
	// use: it is there already, and nothing in the directory changes.
	_, err := destination.Download(t.Context(), d, res.Name, dir, nil)
	if !errors.Is(err, destination.ErrDownloaded) || exitcode.Of(err) != exitcode.Usage {
		t.Errorf("download again into %s = %v (exit %d), want ErrDownloaded, exit %d", dir, err, exitcode.Of(err), exitcode.Usage)
	}
	sameFiles(t, bs[1].Dir, dir)
}

// copyBackup copies a backup directory, files keeping their modes.
func copyBackup(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(src)
	for _, e := range entries {
		fi, _ := e.Info()
		if err := os.Chmod(filepath.Join(dst, e.Name()), fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func testCorruptRefused(t *testing.T, h Harness, bs []Backup) {
	d := h.New(t)
	dir := copyBackup(t, bs[0].Dir)
	FlipByte(t, filepath.Join(dir, bs[0].Manifest.File(manifest.KindSnapshot).Name))
	_, err := destination.UploadDir(t.Context(), d, dir, nil)
	if exitcode.Of(err) != exitcode.Verify {
		t.Fatalf("upload of a corrupt snapshot = %v (exit %d), want exit %d", err, exitcode.Of(err), exitcode.Verify)
	}
	if got := list(t, d); len(got) != 0 {
		t.Errorf("after a refused upload list = %q, want nothing", names(got))
	}
	// The corrupt bytes were not kept under the snapshot's digest: the
	// good file is sent, not taken as already stored.
	up, err := d.Begin(t.Context(), bs[0].Manifest)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	f := *bs[0].Manifest.File(manifest.KindSnapshot)
	opens := 0
	if _, reused, err := up.Put(t.Context(), f, counting(bs[0].Dir, &opens)(f)); err != nil || reused || (opens != 1 && !h.OneBlob) {
		t.Errorf("put of the good snapshot after the corrupt one = %v, %v, %d opens; want it sent", reused, err, opens)
	}
}

// tamper changes a byte of what holds file f of res, where it rests, and
// changes it back when the test ends: destinations of one kind may share
// what they store (a registry's blobs are addressed by their content, in
// whichever repository), and the next test must find it whole.
func tamper(t *testing.T, h Harness, res destination.Result, f manifest.File) {
	h.Tamper(t, res, f)
	t.Cleanup(func() { h.Tamper(t, res, f) })
}

// FlipByte changes the byte in the middle of the file at path; a second
// call changes it back.
func FlipByte(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// cutReader cancels its upload after some bytes.
type cutReader struct {
	r      io.ReadCloser
	left   int
	cancel context.CancelFunc
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.cancel()
		return 0, context.Canceled
	}
	n, err := c.r.Read(p[:min(len(p), c.left)])
	c.left -= n
	return n, err
}

func (c *cutReader) Close() error { return c.r.Close() }

func testInterrupted(t *testing.T, h Harness, bs []Backup) {
	d := h.New(t)
	b := bs[0]
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	up, err := d.Begin(ctx, b.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range b.Manifest.Files {
		open := func() (io.ReadCloser, error) {
			r, err := os.Open(filepath.Join(b.Dir, f.Name))
			return &cutReader{r: r, left: int(f.Size / 2), cancel: cancel}, err
		}
		_, _, err := up.Put(ctx, f, open)
		if h.OneBlob {
			// The files are read at Commit, which is cut.
			if err != nil {
				t.Fatalf("put %s: %v", f.Name, err)
			}
			continue
		}
		if err == nil {
			t.Fatalf("put %s cut half-way succeeded", f.Name)
		}
		break
	}
	if _, err := up.Commit(ctx, b.Manifest); err == nil {
		t.Error("commit after a cut put succeeded")
	}
	up.Close()
	if got := list(t, d); len(got) != 0 {
		t.Errorf("after an interrupted upload list = %q, want nothing", names(got))
	}
	if _, err := destination.Newest(t.Context(), d, "", Log(t)); !errors.Is(err, destination.ErrNoBackup) {
		t.Errorf("latest after an interrupted upload = %v, want %v", err, destination.ErrNoBackup)
	}
	upload(t, d, b)
	if got := list(t, d); len(got) != 1 || got[0].State != destination.Complete {
		t.Errorf("after the upload is run again list = %q, want one complete backup", names(got))
	}
}

// removed are the entries decisions remove.
func removed(decisions []destination.Decision) []destination.Entry {
	var out []destination.Entry
	for _, d := range decisions {
		if d.Action == destination.Remove {
			out = append(out, d.Entry)
		}
	}
	return out
}

func testPrune(t *testing.T, h Harness, bs []Backup) {
	d := h.New(t)
	for _, b := range bs {
		upload(t, d, b)
	}
	foreign := h.Foreign(t, d, bs[0].Manifest)
	if err := d.Delete(t.Context(), foreign); err == nil {
		t.Errorf("delete of %s, which this tool did not write, succeeded", foreign)
	}
	newest := list(t, d)
	newest = slices.DeleteFunc(newest, func(e destination.Entry) bool { return !e.Ours })
	keepName := newest[len(newest)-1].Name
	keepOne := destination.Policy{KeepLast: 1}
	dry, err := destination.Prune(t.Context(), d, keepOne, "", time.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	if planned := removed(dry); len(planned) != len(bs)-1 || len(list(t, d)) != len(bs)+1 {
		t.Fatalf("dry run would delete %q and left %q; want %d planned, nothing deleted", names(planned), names(list(t, d)), len(bs)-1)
	}
	decisions, err := destination.Prune(t.Context(), d, keepOne, "", time.Now(), false)
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	if deleted := removed(decisions); len(deleted) != len(bs)-1 {
		t.Errorf("prune deleted %q, want all but the newest", names(deleted))
	}
	var left []string
	for _, e := range list(t, d) {
		left = append(left, e.Name)
	}
	slices.Sort(left)
	want := []string{foreign, keepName}
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Errorf("after prune list = %q, want the newest (%s) and the foreign one (%s)", left, keepName, foreign)
	}
	if _, err := destination.Verify(t.Context(), d, keepName, verify.Options{Log: Log(t)}, nil); err != nil {
		t.Errorf("the kept backup no longer verifies: %v", err)
	}
	for _, e := range removed(decisions) {
		if err := d.Delete(t.Context(), e.Name); !errors.Is(err, destination.ErrNoSuchBackup) || exitcode.Of(err) != exitcode.Usage {
			t.Errorf("delete of %s, pruned already = %v (exit %d), want %v, exit %d", e.Name, err, exitcode.Of(err), destination.ErrNoSuchBackup, exitcode.Usage)
		}
		if s, err := d.Open(t.Context(), e.Name); !errors.Is(err, destination.ErrNoSuchBackup) || exitcode.Of(err) != exitcode.Usage {
			if err == nil {
				s.Close()
			}
			t.Errorf("open of %s, pruned = %v (exit %d), want %v, exit %d", e.Name, err, exitcode.Of(err), destination.ErrNoSuchBackup, exitcode.Usage)
		}
	}
}

// beside is a destination where another run deletes each backup just
// before this one does.
type beside struct{ destination.Dest }

func (b beside) Delete(ctx context.Context, name string) error {
	if err := b.Dest.Delete(ctx, name); err != nil {
		return err
	}
	return b.Dest.Delete(ctx, name)
}

// testPruneBesideAnother: two prunes at once (two schedules, two masters)
// decide alike; the backups the other one deleted first count as deleted,
// and neither fails.
func testPruneBesideAnother(t *testing.T, h Harness, bs []Backup) {
	d := h.New(t)
	for _, b := range bs {
		upload(t, d, b)
	}
	decisions, err := destination.Prune(t.Context(), beside{d}, destination.Policy{KeepLast: 1}, "", time.Now(), false)
	if err != nil {
		t.Fatalf("prune beside another = %v, want it to pass", err)
	}
	deleted := removed(decisions)
	if len(deleted) != len(bs)-1 {
		t.Errorf("prune beside another deleted %q, want all but the newest", names(deleted))
	}
	for _, dec := range decisions {
		if dec.Action == destination.Remove && !strings.Contains(dec.Reason, "another run") {
			t.Errorf("the decision on %s says %q, want it to say another run deleted it", dec.Entry.Name, dec.Reason)
		}
	}
	if left := list(t, d); len(left) != 1 {
		t.Errorf("after prune list = %q, want the newest only", names(left))
	}
}

// testLatestSkipsBad: --latest takes the newest backup that passes its
// check. Cloud Storage tells of bytes changed where they rest when they are
// listed, a registry or a layout only when they are read: either way the
// newest complete backup, its stored snapshot changed, is passed over with
// a warning for the next newest. When every one fails, nothing is left.
func testLatestSkipsBad(t *testing.T, h Harness, bs []Backup) {
	d := h.New(t)
	stored := map[string]destination.Result{}
	dirs := map[string]string{}
	for _, b := range bs {
		res := upload(t, d, b)
		stored[res.Name], dirs[res.Name] = res, b.Dir
	}
	tamper := func(name string) {
		s, err := d.Open(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		f := *s.Manifest().File(manifest.KindSnapshot)
		s.Close()
		tamper(t, h, stored[name], f)
	}
	entries := list(t, d)
	newest, next := entries[len(entries)-1], entries[len(entries)-2]
	tamper(newest.Name)
	latest := func(dir string, log *slog.Logger) (*manifest.Backup, error) {
		found, err := destination.Newest(t.Context(), d, "", log)
		if err != nil {
			return nil, err
		}
		return destination.LatestGood(d, found, log, func(name string) (*manifest.Backup, error) {
			return destination.Download(t.Context(), d, name, dir, nil)
		})
	}
	var logged bytes.Buffer
	dir := filepath.Join(t.TempDir(), "download")
	if _, err := latest(dir, slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatalf("download of the latest good backup: %v", err)
	}
	sameFiles(t, dirs[next.Name], dir)
	if !strings.Contains(logged.String(), "skipping "+newest.URL) {
		t.Errorf("the log does not say that %s was skipped:\n%s", newest.URL, logged.String())
	}
	for _, e := range entries[:len(entries)-1] {
		tamper(e.Name)
	}
	dir = filepath.Join(t.TempDir(), "download")
	if _, err := latest(dir, Log(t)); err == nil {
		t.Error("download of the latest good backup where none is good passed")
	}
	assertAbsent(t, dir)
}
