package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcd-backup/etcd-backup/internal/staticpod"
)

// member is a tar header with the content that followed it.
type member struct {
	hdr  *tar.Header
	data []byte
}

// readAll decodes an archive with the standard library, independently of Check.
func readAll(t *testing.T, archive []byte) []member {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var ms []member
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return ms
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, member{hdr, data})
	}
}

func write(t *testing.T, f *fixture) ([]byte, Summary) {
	t.Helper()
	var buf bytes.Buffer
	// Unsorted on purpose: the archive order must not depend on the caller's.
	dirs := slices.Clone(f.dirs)
	slices.Reverse(dirs)
	sum, err := Write(context.Background(), &buf, f.root, dirs)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), sum
}

// layouts are the host trees Write archives, one per platform.
var layouts = []struct {
	name    string
	fixture func(testing.TB) *fixture
	// extract is what a restore passes to tar after the archive's name.
	extract []string
}{
	{"openshift", newFixture, []string{"static-pod-resources"}},
	{"kubeadm", newKubeadmFixture, nil},
}

func TestWriteMembers(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) { testWriteMembers(t, l.fixture(t)) })
	}
}

func testWriteMembers(t *testing.T, f *fixture) {
	archive, sum := write(t, f)
	if want := f.summary(); !reflect.DeepEqual(sum, want) {
		t.Errorf("summary %+v (cert %+v)\nwant    %+v (cert %+v)", sum, sum.EarliestCert, want, want.EarliestCert)
	}

	ms := readAll(t, archive)
	byName := map[string]member{}
	var names []string
	for _, m := range ms {
		byName[m.hdr.Name] = m
		names = append(names, m.hdr.Name)
	}
	var want []string
	for _, e := range f.entries {
		if e.dir {
			want = append(want, e.name+"/")
		} else {
			want = append(want, e.name)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("members\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	// Restore creates each directory before what it holds, and the
	// top-level directories come in sorted order.
	var tops []string
	for i, n := range names {
		if slices.Contains(f.dirs, strings.TrimSuffix(n, "/")) {
			tops = append(tops, n)
			continue
		}
		if dir := filepath.Dir(strings.TrimSuffix(n, "/")) + "/"; !slices.Contains(names[:i], dir) {
			t.Errorf("%s comes before its directory %s", n, dir)
		}
	}
	if !slices.IsSorted(tops) || len(tops) != len(f.dirs) {
		t.Errorf("top-level directories in order %q", tops)
	}

	for _, e := range f.entries {
		name := e.name
		if e.dir {
			name += "/"
		}
		m := byName[name]
		h := m.hdr
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner names %q/%q, want numeric ids only", name, h.Uname, h.Gname)
		}
		fi, err := os.Lstat(filepath.Join(f.root, filepath.FromSlash(e.name)))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if h.Uid != int(st.Uid) || h.Gid != int(st.Gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", name, h.Uid, h.Gid, st.Uid, st.Gid)
		}
		if got := h.FileInfo().Mode(); got != fi.Mode() {
			t.Errorf("%s: mode %v, want %v", name, got, fi.Mode())
		}
		if !h.ModTime.Equal(fi.ModTime().Truncate(time.Second)) {
			t.Errorf("%s: mtime %v, want %v", name, h.ModTime, fi.ModTime())
		}
		switch {
		case e.link != "":
			if h.Typeflag != tar.TypeSymlink || h.Linkname != e.link {
				t.Errorf("%s: type %q link %q, want symlink to %q", name, h.Typeflag, h.Linkname, e.link)
			}
		case e.dir:
			if h.Typeflag != tar.TypeDir {
				t.Errorf("%s: type %q, want directory", name, h.Typeflag)
			}
		default:
			if h.Typeflag != tar.TypeReg || string(m.data) != e.data {
				t.Errorf("%s: type %q, content differs", name, h.Typeflag)
			}
		}
	}
	if m, ok := byName["static-pod-resources/kube-controller-manager-pod-9/configmaps/config.yaml"]; ok && os.Geteuid() == 0 {
		if h := m.hdr; h.Uid != 1234 || h.Gid != 5678 {
			t.Errorf("chowned file stored as %d:%d", h.Uid, h.Gid)
		}
	}

	raw := decompress(t, archive)
	for _, s := range []string{outsideSecret, hiddenContent, notRunning} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("archive holds %q, which lies outside the archived directories", s)
		}
	}

	again, _ := write(t, f)
	if !bytes.Equal(archive, again) {
		t.Error("two archives of the same tree differ")
	}
}

func decompress(t *testing.T, archive []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestRestoreWithGNUTar extracts the archive as a restore does
// (cluster-restore.sh on OpenShift, kubeadm's documentation otherwise) and
// compares the result with the host tree.
func TestRestoreWithGNUTar(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must install GNU tar:", err)
		}
		t.Skip("no tar:", err)
	}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) { testRestoreWithGNUTar(t, l.fixture(t), l.extract) })
	}
}

func testRestoreWithGNUTar(t *testing.T, f *fixture, extract []string) {
	archive, _ := write(t, f)
	file := filepath.Join(t.TempDir(), "static_kuberesources_2024-05-06_070809.tar.gz")
	if err := os.WriteFile(file, archive, 0o600); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	if out, err := exec.Command("tar", append([]string{"-C", dest, "-xzf", file}, extract...)...).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	// As root (as restore runs), tar keeps owners and every mode bit; an
	// ordinary user's tar applies the umask and drops setuid/setgid.
	root := os.Geteuid() == 0
	for _, e := range f.entries {
		orig, err := os.Lstat(filepath.Join(f.root, filepath.FromSlash(e.name)))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dest, filepath.FromSlash(e.name))
		got, err := os.Lstat(p)
		if err != nil {
			t.Errorf("not restored: %v", err)
			continue
		}
		wantMode, gotMode := orig.Mode(), got.Mode()
		if !root {
			wantMode &= fs.ModeType | 0o755
			gotMode &= fs.ModeType | 0o755
		}
		if gotMode != wantMode {
			t.Errorf("%s: mode %v, want %v", e.name, gotMode, wantMode)
		}
		os1, os2 := orig.Sys().(*syscall.Stat_t), got.Sys().(*syscall.Stat_t)
		if root && (os1.Uid != os2.Uid || os1.Gid != os2.Gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", e.name, os2.Uid, os2.Gid, os1.Uid, os1.Gid)
		}
		switch {
		case e.link != "":
			if target, err := os.Readlink(p); err != nil || target != e.link {
				t.Errorf("%s: link %q, %v; want %q", e.name, target, err, e.link)
			}
		case e.dir:
		default:
			if data, err := os.ReadFile(p); err != nil || string(data) != e.data {
				t.Errorf("%s: content differs (%v)", e.name, err)
			}
		}
		if e.link == "" && !got.ModTime().Equal(orig.ModTime().Truncate(time.Second)) {
			t.Errorf("%s: mtime %v, want %v", e.name, got.ModTime(), orig.ModTime())
		}
	}
	// Nothing more was restored: nothing outside the archived directories,
	// nothing through a link.
	want := map[string]bool{}
	for _, e := range f.entries {
		for p := e.name; p != "."; p = path.Dir(p) {
			want[p] = true
		}
	}
	n := 0
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dest {
			return err
		}
		n++
		if rel, _ := filepath.Rel(dest, p); !want[filepath.ToSlash(rel)] {
			t.Errorf("restored %s, which the host tree does not have there", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Errorf("restored %d entries, want %d", n, len(want))
	}
}

func TestDirs(t *testing.T) {
	tests := []struct {
		name string
		revs []staticpod.Revision
		want []string
	}{
		{"kubeadm", nil, []string{"manifests", "pki"}},
		{"kubeadm, empty", []staticpod.Revision{}, []string{"manifests", "pki"}},
		{"openshift", []staticpod.Revision{
			{Component: "kube-apiserver", Revision: 7, Dir: staticpod.RevisionDir("kube-apiserver", 7)},
			{Component: "etcd", Revision: 5, Dir: staticpod.RevisionDir("etcd", 5)},
		}, []string{"static-pod-resources/kube-apiserver-pod-7", "static-pod-resources/etcd-pod-5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Dirs(tt.revs)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Dirs = %q, want %q", got, tt.want)
			}
			// What Dirs names, Write accepts.
			if err := checkDirs(slices.Sorted(slices.Values(got))); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestWriteSummaries(t *testing.T) {
	f := newFixture(t)
	var buf bytes.Buffer
	sum, err := Write(context.Background(), &buf, f.root, []string{"static-pod-resources/etcd-pod-5"})
	if err != nil {
		t.Fatal(err)
	}
	if sum.EncryptionConfig {
		t.Error("encryption config reported for an etcd-only archive")
	}
	if c := sum.EarliestCert; c == nil || c.Path != "static-pod-resources/etcd-pod-5/secrets/etcd-all-certs/etcd-peer-m0.crt" || !c.NotAfter.Equal(date(2030, 2, 2)) {
		t.Errorf("earliest certificate %+v", c)
	}
	sum, err = Write(context.Background(), &buf, f.root, []string{"static-pod-resources/kube-scheduler-pod-6"})
	if err != nil {
		t.Fatal(err)
	}
	if sum.EarliestCert != nil || sum.EncryptionConfig || sum.Files != 1 || sum.Dirs != 1 {
		t.Errorf("summary %+v", sum)
	}
}

func TestWriteErrors(t *testing.T) {
	const etcd = "static-pod-resources/etcd-pod-5"
	tests := []struct {
		name  string
		dirs  []string
		setup func(t *testing.T, root string)
		want  string
	}{
		{"not a revision directory", []string{"static-pod-resources/etcd-certs"}, nil, "not under static-pod-resources/<component>-pod-<N>/"},
		{"below a revision directory", []string{etcd + "/secrets"}, nil, "not a revision directory"},
		{"escaping", []string{"../etcd-pod-5"}, nil, `".." element`},
		{"absolute", []string{"/" + etcd}, nil, "absolute path"},
		{"listed twice", []string{etcd, etcd}, nil, "listed twice"},
		{"below pki", []string{"pki/etcd"}, nil, "not a revision directory, manifests or pki"},
		{"kubeadm listed twice", []string{"pki", "manifests", "pki"}, nil, "listed twice"},
		{"both layouts", []string{etcd, "manifests", "pki"}, nil, "not both"},
		{"kubeadm missing", []string{"manifests", "pki"}, nil, "no such file or directory"},
		{"missing", []string{"static-pod-resources/etcd-pod-6"}, nil, "no such file or directory"},
		{"revision directory is a symlink", []string{"static-pod-resources/etcd-pod-6"}, func(t *testing.T, root string) {
			if err := os.Symlink("etcd-pod-5", filepath.Join(root, "static-pod-resources/etcd-pod-6")); err != nil {
				t.Fatal(err)
			}
		}, "is not a directory"},
		{"fifo", []string{etcd}, func(t *testing.T, root string) {
			if err := syscall.Mkfifo(filepath.Join(root, etcd, "secrets", "fifo"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "etcd-pod-5/secrets/fifo: unsupported file type"},
		{"unreadable file", []string{etcd}, func(t *testing.T, root string) {
			if os.Geteuid() == 0 {
				t.Skip("root reads any file")
			}
			if err := os.Chmod(filepath.Join(root, etcd, "etcd-pod.yaml"), 0); err != nil {
				t.Fatal(err)
			}
		}, "permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(t, f.root)
			}
			_, err := Write(context.Background(), io.Discard, f.root, tt.dirs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// cancelWriter cancels its context once more than after bytes were written.
type cancelWriter struct {
	cancel  context.CancelFunc
	after   int
	written int
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.written += len(p)
	if w.written > w.after {
		w.cancel()
	}
	return len(p), nil
}

func TestWriteCancel(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "static-pod-resources", "etcd-pod-5")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Incompressible, so the compressor writes out while the file is copied.
	big := make([]byte, 8<<20)
	if _, err := rand.NewChaCha8([32]byte{}).Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	dirs := []string{"static-pod-resources/etcd-pod-5"}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Write(ctx, io.Discard, root, dirs); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled before: err = %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	w := &cancelWriter{cancel: cancel, after: 1 << 20}
	if _, err := Write(ctx, w, root, dirs); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "etcd-pod-5/big") {
		t.Errorf("canceled during a file: err = %v", err)
	}
	// Promptly: within a few compressor blocks, not at the end of the file.
	if w.written > 2<<20 {
		t.Errorf("%d bytes written after cancellation at 1 MiB", w.written)
	}
}
