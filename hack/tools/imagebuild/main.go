// Command imagebuild builds the OCI images the charts run — tenantcloud's four programs and
// the upstream binaries hack/bin.sh builds (CSI sidecars, cluster-autoscaler) — from binaries
// already in bin/, without a Docker engine, into an OCI image layout, and pushes them to a
// registry.
//
//	imagebuild build --bin bin --out bin/images --registry ghcr.io/tenantcloud --version v1.2.3 [--push]
//	imagebuild push  --out bin/images --registry 127.0.0.1:5000/tenantcloud
//
// Images are reproducible: layers are tars with sorted entries, one fixed time stamp and fixed
// owners, compressed without names or times; configs carry the same fixed time. Two builds of
// the same binaries and Debian packages give the same digests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := mainErr(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild: error:", err)
		os.Exit(1)
	}
}

func mainErr(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: imagebuild build|push [flags]")
	}
	fs := flag.NewFlagSet("imagebuild "+args[0], flag.ContinueOnError)
	var o options
	fs.StringVar(&o.out, "out", "bin/images", "directory of the OCI layout (oci/), the layer and .deb caches and the summary")
	fs.StringVar(&o.registry, "registry", "ghcr.io/tenantcloud", "registry and path the image names go under: <registry>/<name>:<tag>")
	fs.BoolVar(&o.insecure, "insecure", false, "talk plain HTTP to the registry (loopback and private addresses always do)")
	switch args[0] {
	case "build":
		fs.StringVar(&o.bin, "bin", "bin", "directory of the upstream binaries (hack/bin.sh)")
		fs.StringVar(&o.debs, "debs", "", "directory of the .deb cache (default <out>/debs)")
		fs.StringVar(&o.static, "static", "bin/static", "directory of tenantcloud's static binaries (make images)")
		fs.StringVar(&o.version, "version", "", "version of tenantcloud's programs: their image tag and label")
		fs.StringVar(&o.revision, "revision", "", "source revision, for the image label")
		fs.StringVar(&o.source, "source", "https://github.com/tenantcloud/tenantcloud", "source repository, for the image label")
		fs.Int64Var(&o.epoch, "source-date-epoch", 0, "every time stamp in the images (seconds since 1970; SOURCE_DATE_EPOCH)")
		fs.BoolVar(&o.push, "push", false, "also push every image to --registry")
		fs.BoolVar(&o.noCache, "no-cache", false, "compress every layer again instead of reusing the layer cache")
		fs.Var(&o.only, "only", "build only this image (repeatable); default all")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.version == "" {
			return errors.New("--version is required")
		}
		if o.debs == "" {
			o.debs = filepath.Join(o.out, "debs")
		}
		return build(ctx, o)
	case "push":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return pushLayout(ctx, o)
	}
	return fmt.Errorf("unknown command %q: want build or push", args[0])
}

type options struct {
	out, registry     string
	insecure          bool
	bin, static, debs string
	version, revision string
	source            string
	epoch             int64
	push, noCache     bool
	only              stringList
}

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
