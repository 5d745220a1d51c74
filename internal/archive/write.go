package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Write streams a gzip-compressed tar of dirs into w. dirs are the
// top-level directories relative to root (the host's /etc/kubernetes), as
// Dirs returns them; they are archived in sorted order, and so is everything
// below them, so equal trees give equal archives.
func Write(ctx context.Context, w io.Writer, root string, dirs []string) (Summary, error) {
	dirs = slices.Sorted(slices.Values(dirs))
	if err := checkDirs(dirs); err != nil {
		return Summary{}, err
	}
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return Summary{}, fmt.Errorf("archive: %w", err)
	}
	a := &writer{ctx: ctx, tw: tar.NewWriter(zw), root: root}
	for _, d := range dirs {
		if err := a.addTree(d); err != nil {
			return Summary{}, err
		}
	}
	if err := a.tw.Close(); err != nil {
		return Summary{}, fmt.Errorf("archive: %w", err)
	}
	if err := zw.Close(); err != nil {
		return Summary{}, fmt.Errorf("archive: %w", err)
	}
	return a.sum, nil
}

// checkDirs validates the sorted directories given to Write.
func checkDirs(dirs []string) error {
	for i, d := range dirs {
		top, err := checkName(d)
		switch {
		case err != nil:
			return fmt.Errorf("archive %s: %w", d, err)
		case top != d:
			return fmt.Errorf("archive %s: not a revision directory, %s or %s", d, manifestsDir, pkiDir)
		case i > 0 && dirs[i-1] == d:
			return fmt.Errorf("archive %s: listed twice", d)
		case !sameLayout(dirs[0], d):
			return fmt.Errorf("archive %s and %s: an archive holds OpenShift revision directories or kubeadm's %s and %s, not both", dirs[0], d, manifestsDir, pkiDir)
		}
	}
	return nil
}

type writer struct {
	ctx  context.Context
	tw   *tar.Writer
	root string
	sum  Summary
}

// addTree archives one top-level directory. filepath.WalkDir reports
// symlinks without following them, and visits entries in lexical order.
func (a *writer) addTree(dir string) error {
	start := filepath.Join(a.root, filepath.FromSlash(dir))
	if fi, err := os.Lstat(start); err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("archive %s: %s is not a directory", dir, start)
	}
	return filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("archive %s: %w", dir, err)
		}
		if err := a.ctx.Err(); err != nil {
			return fmt.Errorf("archive %s: %w", dir, err)
		}
		rel, err := filepath.Rel(a.root, p)
		if err != nil {
			return fmt.Errorf("archive %s: %w", p, err)
		}
		if err := a.add(p, filepath.ToSlash(rel), d); err != nil {
			return fmt.Errorf("archive %s: %w", p, err)
		}
		return nil
	})
}

// add writes the member name for the host file p.
func (a *writer) add(p, name string, d fs.DirEntry) error {
	if _, err := checkName(name); err != nil {
		return err
	}
	fi, err := d.Info()
	if err != nil {
		return err
	}
	var link string
	switch t := fi.Mode().Type(); t {
	case 0, fs.ModeDir:
	case fs.ModeSymlink:
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported file type %v: only files, directories and symlinks are archived", t)
	}
	hdr, err := tar.FileInfoHeader(noNames{fi}, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	// GNU tar keeps whole seconds; access and change times are not restored.
	hdr.ModTime = fi.ModTime().Truncate(time.Second)
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	switch hdr.Typeflag {
	case tar.TypeDir:
		hdr.Name += "/"
		a.sum.Dirs++
	case tar.TypeSymlink:
		a.sum.Symlinks++
	}
	if err := a.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	data, err := a.copyFile(p, fi)
	if err != nil {
		return err
	}
	a.sum.addFile(name, fi.Size(), data)
	return nil
}

// copyFile streams the regular file p into the current member. The bytes of
// a certificate file are kept as they pass, so no file is read twice.
func (a *writer) copyFile(p string, fi fs.FileInfo) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The walk saw a regular file; make sure that is what was opened, and
	// not a symlink swapped in since.
	if ofi, err := f.Stat(); err != nil {
		return nil, err
	} else if !os.SameFile(fi, ofi) {
		return nil, errChanged
	}
	var src io.Reader = io.LimitReader(ctxReader{a.ctx, f}, fi.Size())
	var cert *bytes.Buffer
	if wantsCertScan(p, fi.Size()) {
		cert = bytes.NewBuffer(make([]byte, 0, fi.Size()))
		src = io.TeeReader(src, cert)
	}
	if n, err := io.Copy(a.tw, src); err != nil {
		return nil, err
	} else if n != fi.Size() {
		return nil, errChanged
	}
	if n, _ := f.Read(make([]byte, 1)); n > 0 {
		return nil, errChanged
	}
	if cert == nil {
		return nil, nil
	}
	return cert.Bytes(), nil
}

// noNames keeps tar.FileInfoHeader from looking up user and group names:
// the archive carries numeric owners only, as restore maps them by number.
type noNames struct{ fs.FileInfo }

func (noNames) Uname() (string, error) { return "", nil }
func (noNames) Gname() (string, error) { return "", nil }
