package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"reflect"
	"strings"
	"testing"
)

// tarGz builds an archive from headers; a regular file's content is its
// name repeated to its size.
func tarGz(t testing.TB, hdrs ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range hdrs {
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bytes.Repeat([]byte("x"), int(h.Size))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// storedTarGz is tarGz without compression, so that offsets in the archive
// are offsets in the tar stream plus gzip's few header bytes.
func storedTarGz(t testing.TB, hdrs ...tar.Header) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tarGz(t, hdrs...)))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(zw, zr); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dir(name string) tar.Header  { return tar.Header{Typeflag: tar.TypeDir, Name: name} }
func file(name string) tar.Header { return tar.Header{Typeflag: tar.TypeReg, Name: name, Size: 3} }

const etcdDir = "static-pod-resources/etcd-pod-5"

func TestCheckAcceptsWrite(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			f := l.fixture(t)
			archive, sum := write(t, f)
			for _, want := range [][]string{f.dirs, nil} {
				got, err := Check(bytes.NewReader(archive), want)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, sum) {
					t.Errorf("Check summary %+v\nWrite summary %+v", got, sum)
				}
			}
		})
	}
}

func TestCheckAcceptsTrailingSlashesAndOtherWriters(t *testing.T) {
	// A directory entry without the trailing slash, as some writers emit.
	archive := tarGz(t, tar.Header{Typeflag: tar.TypeDir, Name: etcdDir}, file(etcdDir+"/a"))
	sum, err := Check(bytes.NewReader(archive), []string{etcdDir + "/"})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Dirs != 1 || sum.Files != 1 || sum.Bytes != 3 {
		t.Errorf("summary %+v", sum)
	}
}

func TestCheckRejects(t *testing.T) {
	f := newFixture(t)
	valid, _ := write(t, f)
	corrupt := bytes.Clone(valid)
	corrupt[len(corrupt)-6] ^= 0xff // in the gzip trailer's CRC-32
	kubeadm := Dirs(nil)
	// Cut inside a certificate that Check reads for its expiry, where the
	// tar reader reports the end of the data, not the next header.
	bigCert := storedTarGz(t, dir(etcdDir+"/"), tar.Header{Typeflag: tar.TypeReg, Name: etcdDir + "/big.crt", Size: 4096})
	bigCert = bigCert[:3*512]

	tests := []struct {
		name    string
		archive []byte
		want    []string
		msg     string
	}{
		{"dot-dot", tarGz(t, dir(etcdDir+"/"), file(etcdDir+"/../../../etc/passwd")), []string{etcdDir}, `".." element`},
		{"leading dot-dot", tarGz(t, file("../static-pod-resources/etcd-pod-5/x")), nil, `".." element`},
		{"trailing dot-dot", tarGz(t, dir(etcdDir+"/"), dir(etcdDir+"/a/../")), []string{etcdDir}, `".." element`},
		{"absolute", tarGz(t, dir("/"+etcdDir+"/")), nil, "absolute path"},
		{"dot-slash prefix", tarGz(t, dir("./"+etcdDir+"/")), nil, `"./" prefix`},
		{"dot", tarGz(t, dir("./")), nil, `"./" prefix`},
		{"unclean", tarGz(t, dir(etcdDir+"/"), file(etcdDir+"//a")), []string{etcdDir}, "not a clean relative"},
		{"parent entry", tarGz(t, dir("static-pod-resources/"), dir(etcdDir+"/")), nil, "not under static-pod-resources/<component>-pod-<N>/"},
		{"other directory", tarGz(t, dir("static-pod-resources/etcd-certs/")), nil, "not under"},
		{"unknown component", tarGz(t, dir("static-pod-resources/openshift-apiserver-pod-3/")), nil, "not under"},
		{"missing wanted dir", tarGz(t, dir(etcdDir+"/")), []string{etcdDir, "static-pod-resources/kube-apiserver-pod-7"}, "no directory entry static-pod-resources/kube-apiserver-pod-7/"},
		{"files without their directory entry", tarGz(t, file(etcdDir+"/a")), []string{etcdDir}, "no directory entry " + etcdDir + "/"},
		{"unexpected revision", tarGz(t, dir(etcdDir+"/"), dir("static-pod-resources/etcd-pod-4/")), []string{etcdDir}, "outside the expected directories"},
		{"duplicate", tarGz(t, dir(etcdDir+"/"), file(etcdDir+"/a"), file(etcdDir+"/a")), nil, "appears twice"},
		{"below a symlink", tarGz(t, dir(etcdDir+"/"), tar.Header{Typeflag: tar.TypeSymlink, Name: etcdDir + "/l", Linkname: "/etc"}, file(etcdDir+"/l/passwd")), nil, "below a symlink"},
		{"revision dir as symlink", tarGz(t, tar.Header{Typeflag: tar.TypeSymlink, Name: etcdDir, Linkname: "/"}), nil, "not a directory entry"},
		{"revision dir as file", tarGz(t, file(etcdDir)), nil, "not a directory entry"},
		{"hard link", tarGz(t, dir(etcdDir+"/"), file(etcdDir+"/a"), tar.Header{Typeflag: tar.TypeLink, Name: etcdDir + "/b", Linkname: etcdDir + "/a"}), nil, "only files, directories and symlinks"},
		{"device", tarGz(t, dir(etcdDir+"/"), tar.Header{Typeflag: tar.TypeChar, Name: etcdDir + "/null", Devmajor: 1, Devminor: 3}), nil, "only files, directories and symlinks"},
		{"kubeadm dir missing", tarGz(t, dir("manifests/"), file("manifests/etcd.yaml")), kubeadm, "no directory entry pki/"},
		{"kubeadm file below nothing", tarGz(t, dir("manifests/"), dir("pki/"), file("admin.conf")), kubeadm, "not under"},
		{"kubeadm look-alike", tarGz(t, dir("manifests/"), dir("pki/"), dir("pki.bak/")), nil, "not under"},
		{"kubeadm dot-dot", tarGz(t, dir("pki/"), file("pki/../admin.conf")), nil, `".." element`},
		{"kubeadm dir as file", tarGz(t, file("pki")), nil, "not a directory entry"},
		{"kubeadm dir as symlink", tarGz(t, tar.Header{Typeflag: tar.TypeSymlink, Name: "pki", Linkname: "/etc/pki"}), nil, "not a directory entry"},
		{"kubeadm below a symlink", tarGz(t, dir("pki/"), tar.Header{Typeflag: tar.TypeSymlink, Name: "pki/etcd", Linkname: "/"}, file("pki/etcd/x")), nil, "below a symlink"},
		{"kubeadm where revisions are wanted", tarGz(t, dir("pki/")), []string{etcdDir}, "outside the expected directories"},
		{"revisions where kubeadm is wanted", tarGz(t, dir(etcdDir+"/")), kubeadm, "outside the expected directories"},
		{"kubeadm then revisions", tarGz(t, dir("manifests/"), dir(etcdDir+"/")), nil, "mixes kubeadm's manifests and pki with OpenShift revision directories"},
		{"revisions then kubeadm", tarGz(t, dir(etcdDir+"/"), file(etcdDir+"/a"), dir("pki/")), nil, "mixes"},
		{"truncated gzip", valid[:len(valid)-10], f.dirs, "truncated"},
		{"truncated tar", valid[:len(valid)/2], f.dirs, "truncated"},
		{"truncated certificate", bigCert, []string{etcdDir}, "truncated"},
		{"corrupt checksum", corrupt, f.dirs, "checksum"},
		{"garbage after gzip", append(bytes.Clone(valid), "garbage"...), f.dirs, "not gzip"},
		{"not gzip", []byte("static-pod-resources/etcd-pod-5/"), nil, "not gzip"},
		{"empty", nil, nil, "not gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Check(bytes.NewReader(tt.archive), tt.want)
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.msg)
			}
		})
	}
}

func FuzzCheck(f *testing.F) {
	want := []string{etcdDir}
	valid := tarGz(f, dir(etcdDir+"/"), file(etcdDir+"/a.crt"),
		tar.Header{Typeflag: tar.TypeSymlink, Name: etcdDir + "/l", Linkname: "a.crt"})
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(tarGz(f, file(etcdDir+"/../x")))
	f.Add(tarGz(f, dir("static-pod-resources/kube-apiserver-pod-1/"),
		tar.Header{Typeflag: tar.TypeReg, Name: "static-pod-resources/kube-apiserver-pod-1/" + encryptionConfig, Size: 1}))
	f.Add(tarGz(f, dir("manifests/"), dir("pki/"), file("pki/ca.crt")))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		sum, err := Check(bytes.NewReader(data), want)
		if err != nil {
			return
		}
		// Expecting nothing in particular is never stricter.
		loose, err := Check(bytes.NewReader(data), nil)
		if err != nil || !reflect.DeepEqual(sum, loose) {
			t.Fatalf("accepted with %q but not with nil: %v", want, err)
		}
		if sum.Dirs < 1 {
			t.Fatalf("accepted without the revision directory: %+v", sum)
		}
	})
}
