package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// debPackage is one Debian binary package at the version apt would install here.
type debPackage struct {
	Name, Version, Arch string
}

// cacheName is the package's file name under the .deb cache; the version is part of it, so a
// point release of a package is downloaded once and an old one is never used by mistake.
func (p debPackage) cacheName() string {
	return fmt.Sprintf("%s_%s_%s.deb", p.Name, strings.ReplaceAll(p.Version, ":", "%3a"), p.Arch)
}

func (p debPackage) String() string { return p.Name + "=" + p.Version }

// candidates asks apt which version of each package it would install (the candidate of this
// machine's sources), in the order given.
func candidates(ctx context.Context, names []string) ([]debPackage, error) {
	args := append([]string{"show", "--no-all-versions"}, names...)
	out, err := run(ctx, "", "apt-cache", args...)
	if err != nil {
		return nil, err
	}
	found := map[string]debPackage{}
	var cur debPackage
	flush := func() {
		if cur.Name != "" {
			found[cur.Name] = cur
		}
		cur = debPackage{}
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "Package":
			cur.Name = v
		case "Version":
			cur.Version = v
		case "Architecture":
			cur.Arch = v
		}
	}
	flush()
	pkgs := make([]debPackage, 0, len(names))
	for _, n := range names {
		p, ok := found[n]
		if !ok || p.Version == "" {
			return nil, fmt.Errorf("apt-cache knows no candidate for package %s (apt-get update?)", n)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// fetch returns the paths of pkgs' .debs in cacheDir, downloading the missing ones first with
// one apt-get download (one call for all: each call costs seconds of apt's own start-up).
func fetch(ctx context.Context, cacheDir string, pkgs []debPackage) ([]string, error) {
	files := make([]string, len(pkgs))
	var missing []string
	for i, p := range pkgs {
		files[i] = filepath.Join(cacheDir, p.cacheName())
		if _, err := os.Stat(files[i]); err != nil {
			missing = append(missing, p.Name+"="+p.Version)
		}
	}
	if len(missing) == 0 {
		return files, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(cacheDir, "download-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// apt-get download drops privileges to _apt when it can; the temp dir must be writable for it.
	if err := os.Chmod(tmp, 0o777); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "imagebuild: apt-get download %s\n", strings.Join(missing, " "))
	if _, err := run(ctx, tmp, "apt-get", append([]string{"download", "-qq"}, missing...)...); err != nil {
		return nil, err
	}
	for i, p := range pkgs {
		got := filepath.Join(tmp, p.cacheName())
		if _, err := os.Stat(got); err != nil {
			continue // cached before
		}
		if err := os.Rename(got, files[i]); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("apt-get download did not leave %s", filepath.Base(f))
		}
	}
	return files, nil
}

// debFS is the union of the data of some Debian packages, with Debian's merged /usr applied
// (/bin, /sbin, /lib, /lib64 are /usr/…), as they would be installed on a merged-/usr system.
type debFS struct {
	entries map[string]entry
	owner   map[string]string // path → package, for the image's contents list
}

// usrMerged maps a package path to where it lives on a merged-/usr system.
func usrMerged(p string) string {
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib64"} {
		if p == d || strings.HasPrefix(p, d+"/") {
			return "/usr" + p
		}
	}
	return p
}

// load reads the data archive of deb (dpkg-deb --fsys-tarfile: what dpkg-deb -x unpacks)
// into fs. Owners, times and permissions other than the mode bits are dropped.
func (fs *debFS) load(ctx context.Context, pkg, deb string) error {
	data, err := run(ctx, "", "dpkg-deb", "--fsys-tarfile", deb)
	if err != nil {
		return err
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", deb, err)
		}
		p := usrMerged(path.Clean("/" + h.Name))
		if p == "/" {
			continue
		}
		e := entry{typ: h.Typeflag, mode: h.Mode & 0o7777, link: h.Linkname}
		switch h.Typeflag {
		case tar.TypeReg:
			if e.data, err = io.ReadAll(tr); err != nil {
				return fmt.Errorf("reading %s from %s: %w", h.Name, deb, err)
			}
		case tar.TypeLink:
			// A hard link names another entry of the same archive; keep its content.
			target, ok := fs.entries[usrMerged(path.Clean("/"+h.Linkname))]
			if !ok {
				return fmt.Errorf("%s: hard link %s to unknown %s", deb, h.Name, h.Linkname)
			}
			e = entry{typ: tar.TypeReg, mode: target.mode, data: target.data}
		case tar.TypeSymlink, tar.TypeDir:
		default:
			continue
		}
		fs.entries[p] = e
		fs.owner[p] = pkg
	}
}

// resolve follows symlinks from p to a regular file, returning every path on the way (the
// symlinks and the file), as the image must hold each of them for p to work.
func (fs *debFS) resolve(p string) ([]string, error) {
	var chain []string
	for range 40 {
		p = usrMerged(path.Clean(p))
		// A directory symlink on the way (none in these packages today) would need resolving
		// component by component; refuse rather than guess.
		e, ok := fs.entries[p]
		if !ok {
			return nil, fmt.Errorf("%s is in none of the packages", p)
		}
		chain = append(chain, p)
		switch e.typ {
		case tar.TypeReg:
			return chain, nil
		case tar.TypeSymlink:
			if path.IsAbs(e.link) {
				p = e.link
			} else {
				p = path.Join(path.Dir(p), e.link)
			}
		default:
			return nil, fmt.Errorf("%s is not a file", p)
		}
	}
	return nil, fmt.Errorf("%s: too many symlinks", p)
}

// libDirs is where the dynamic loader of Debian amd64 finds the libraries these tools need
// (its default search path after merged /usr).
var libDirs = []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"}

// closure returns every path needed to run the programs at paths: each program with its
// symlinks, the interpreter of a script (#!), the dynamic loader (PT_INTERP) and every shared
// library named by DT_NEEDED, recursively.
func (fs *debFS) closure(paths []string) ([]string, error) {
	need := map[string]bool{}
	queue := append([]string(nil), paths...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		chain, err := fs.resolve(p)
		if err != nil {
			return nil, err
		}
		file := chain[len(chain)-1]
		seen := need[file]
		for _, c := range chain {
			need[c] = true
		}
		if seen {
			continue
		}
		deps, err := fs.dependencies(file)
		if err != nil {
			return nil, err
		}
		queue = append(queue, deps...)
	}
	out := make([]string, 0, len(need))
	for p := range need {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// dependencies lists what file needs to run: a script's interpreter, or an ELF file's loader
// and libraries. Anything else (configuration) needs nothing.
func (fs *debFS) dependencies(file string) ([]string, error) {
	data := fs.entries[file].data
	if bytes.HasPrefix(data, []byte("#!")) {
		line, _, _ := bytes.Cut(data[2:], []byte("\n"))
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			return nil, fmt.Errorf("%s: empty #! line", file)
		}
		return fields[:1], nil
	}
	if !bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		return nil, nil
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	defer f.Close()
	var deps []string
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b, err := io.ReadAll(prog.Open())
			if err != nil {
				return nil, fmt.Errorf("%s: interpreter: %w", file, err)
			}
			deps = append(deps, strings.TrimRight(string(b), "\x00"))
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("%s: DT_NEEDED: %w", file, err)
	}
	for _, lib := range libs {
		found := ""
		for _, d := range libDirs {
			if _, ok := fs.entries[path.Join(d, lib)]; ok {
				found = path.Join(d, lib)
				break
			}
		}
		if found == "" {
			return nil, fmt.Errorf("%s needs %s, which none of the packages holds (add its package to debianPackages)", file, lib)
		}
		deps = append(deps, found)
	}
	return deps, nil
}

// run runs a command and returns its stdout; the error carries its stderr.
func run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
