package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// entry is one file system object of a layer. Owner and mode are explicit so a layer never
// depends on who built it or on the builder's umask.
type entry struct {
	typ      byte // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	data     []byte
	link     string
	mode     int64
	uid, gid int
}

// tree is the content of one layer, keyed by absolute path ("/usr/bin/mount").
type tree map[string]entry

func (t tree) file(p string, mode int64, data []byte) {
	t.parents(p)
	t[p] = entry{typ: tar.TypeReg, data: data, mode: mode}
}

func (t tree) symlink(p, target string) {
	t.parents(p)
	t[p] = entry{typ: tar.TypeSymlink, link: target, mode: 0o777}
}

func (t tree) dir(p string, mode int64, uid, gid int) {
	t.parents(p)
	t[p] = entry{typ: tar.TypeDir, mode: mode, uid: uid, gid: gid}
}

// parents adds the directories above p that are not there yet (root-owned, 0755), so the tar
// never relies on a runtime creating them with its own defaults.
func (t tree) parents(p string) {
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if _, ok := t[d]; !ok {
			t[d] = entry{typ: tar.TypeDir, mode: 0o755}
		}
	}
}

// tarball writes t as an uncompressed tar: entries sorted by path (a parent sorts before its
// children), every time stamp the same, no user or group names, no PAX records that carry
// times. Equal trees give equal bytes.
func (t tree) tarball(mtime time.Time) ([]byte, error) {
	paths := make([]string, 0, len(t))
	for p := range t {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := t[p]
		h := &tar.Header{
			Typeflag: e.typ,
			Name:     strings.TrimPrefix(p, "/"),
			Linkname: e.link,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			ModTime:  mtime,
			Format:   tar.FormatPAX,
		}
		if e.typ == tar.TypeDir {
			h.Name += "/"
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", p, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, fmt.Errorf("tar data %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing tar: %w", err)
	}
	return buf.Bytes(), nil
}

// layerCache keeps compressed layers by the digest of their uncompressed tar, so an unchanged
// layer (a base layer, an unchanged binary) is not compressed again: compressing a 60 MB
// binary takes seconds on this machine, and make images builds ten images.
type layerCache struct {
	dir     string // "" disables the cache
	hits    int
	created int
	used    map[string]bool // cache files this build used
}

// prune removes the cached layers this build did not use (an earlier version's binaries), so
// the cache holds one build's layers, not every build's.
func (c *layerCache) prune() error {
	if c.dir == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(c.dir, "*.tar.gz"))
	if err != nil {
		return err
	}
	for _, f := range files {
		if !c.used[f] {
			if err := os.Remove(f); err != nil {
				return fmt.Errorf("layer cache: %w", err)
			}
		}
	}
	return nil
}

// layer turns t into a gzip-compressed layer. The gzip stream carries no name and no time
// (the zero ModTime is written as 0), so with the pinned Go version its bytes depend only on
// the tar.
func (c *layerCache) layer(t tree, mtime time.Time) (v1.Layer, error) {
	raw, err := t.tarball(mtime)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	l := &gzLayer{diffID: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, unpacked: int64(len(raw))}
	if c.dir != "" {
		l.file = filepath.Join(c.dir, l.diffID.Hex+".tar.gz")
		if c.used == nil {
			c.used = map[string]bool{}
		}
		c.used[l.file] = true
		if data, err := os.ReadFile(l.file); err == nil {
			c.hits++
			return l.with(data), nil
		}
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, fmt.Errorf("compressing layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing layer: %w", err)
	}
	c.created++
	if l.file != "" {
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			return nil, fmt.Errorf("layer cache: %w", err)
		}
		tmp := l.file + ".tmp"
		if err := os.WriteFile(tmp, gz.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("layer cache: %w", err)
		}
		if err := os.Rename(tmp, l.file); err != nil {
			return nil, fmt.Errorf("layer cache: %w", err)
		}
	}
	return l.with(gz.Bytes()), nil
}

// gzLayer is a gzip-compressed layer whose uncompressed digest (the cache key) and size are
// known, so a cached layer is never decompressed to be described.
type gzLayer struct {
	file       string // in the cache, or ""
	compressed []byte
	digest     v1.Hash
	diffID     v1.Hash
	unpacked   int64
}

func (l *gzLayer) with(compressed []byte) *gzLayer {
	sum := sha256.Sum256(compressed)
	l.compressed = compressed
	l.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	return l
}

var _ v1.Layer = (*gzLayer)(nil)

func (l *gzLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *gzLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *gzLayer) Size() (int64, error)     { return int64(len(l.compressed)), nil }
func (l *gzLayer) MediaType() (types.MediaType, error) {
	return types.OCILayer, nil
}
func (l *gzLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *gzLayer) Uncompressed() (io.ReadCloser, error) {
	zr, err := gzip.NewReader(bytes.NewReader(l.compressed))
	if err != nil {
		return nil, err
	}
	return zr, nil
}
