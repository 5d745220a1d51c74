package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// Check reads a tar.gz stream to its end and verifies that it is what a
// restore expects: well-formed gzip and tar; every member a file, directory
// or symlink under a top-level directory of one layout (revision directories,
// or kubeadm's manifests and pki), named without an absolute path, ".." or
// "./" prefix, listed once and not below a symlink member; and, unless
// wantDirs is nil, exactly the top-level directories wantDirs, each with its
// directory entry.
func Check(r io.Reader, wantDirs []string) (Summary, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return Summary{}, fmt.Errorf("check archive: not gzip: %w", err)
	}
	c := checker{
		want:     make(map[string]bool, len(wantDirs)),
		seen:     make(map[string]bool),
		symlinks: make(map[string]bool),
		tops:     make(map[string]bool),
	}
	for _, d := range wantDirs {
		c.want[strings.TrimSuffix(d, "/")] = true
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Summary{}, readError(err)
		}
		if err := c.member(hdr, tr, wantDirs != nil); err != nil {
			return Summary{}, readError(err)
		}
	}
	// The tar end marker may come before the end of the gzip stream: read
	// on so that truncation and checksum errors are seen.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return Summary{}, readError(err)
	}
	for d := range c.want {
		if !c.tops[d] {
			return Summary{}, fmt.Errorf("check archive: no directory entry %s/", d)
		}
	}
	return c.sum, nil
}

func readError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("check archive: truncated, or followed by data that is not gzip: %w", err)
	}
	return fmt.Errorf("check archive: %w", err)
}

type checker struct {
	want     map[string]bool // top-level directories expected
	seen     map[string]bool // member names, without trailing slash
	symlinks map[string]bool // symlink member names
	tops     map[string]bool // top-level directories with a directory entry
	first    string          // the first member's top-level directory, for its layout
	sum      Summary
}

func (c *checker) member(hdr *tar.Header, content io.Reader, exact bool) error {
	top, err := checkName(hdr.Name)
	if err != nil {
		return err
	}
	name := strings.TrimSuffix(hdr.Name, "/")
	if c.first == "" {
		c.first = top
	}
	switch {
	case exact && !c.want[top]:
		return fmt.Errorf("member %q is outside the expected directories", hdr.Name)
	case !sameLayout(c.first, top):
		return fmt.Errorf("member %q mixes kubeadm's %s and %s with OpenShift revision directories", hdr.Name, manifestsDir, pkiDir)
	case c.seen[name]:
		return fmt.Errorf("member %q appears twice", hdr.Name)
	case underSymlink(name, c.symlinks):
		return fmt.Errorf("member %q lies below a symlink", hdr.Name)
	case name == top && hdr.Typeflag != tar.TypeDir:
		return fmt.Errorf("top-level directory %q is not a directory entry", hdr.Name)
	}
	c.seen[name] = true
	switch hdr.Typeflag {
	case tar.TypeDir:
		c.sum.Dirs++
		if name == top {
			c.tops[top] = true
		}
	case tar.TypeSymlink:
		c.sum.Symlinks++
		c.symlinks[name] = true
	case tar.TypeReg:
		var data []byte
		if wantsCertScan(name, hdr.Size) {
			if data, err = io.ReadAll(io.LimitReader(content, hdr.Size)); err != nil {
				return fmt.Errorf("member %q: %w", hdr.Name, err)
			}
		}
		c.sum.addFile(name, hdr.Size, data)
	default:
		return fmt.Errorf("member %q has type %q: only files, directories and symlinks belong in the archive", hdr.Name, hdr.Typeflag)
	}
	return nil
}
