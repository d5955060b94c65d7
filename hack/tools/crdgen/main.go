// Command crdgen writes the KubeVirt and CDI CustomResourceDefinitions the
// test harness installs into its kube-apiservers, and checks CRD files.
//
//	crdgen -out DIR      write the generated CRDs into DIR (one file per CRD)
//	crdgen -verify DIR   parse every *.yaml in DIR and check each document is
//	                     an apiextensions.k8s.io/v1 CRD with a structural
//	                     schema for every version
//
// The KubeVirt CRDs come from the same code virt-operator uses to install
// them (pkg/virt-operator/resource/generate/components). The DataVolume CRD
// is the controller-gen output CDI embeds in pkg/operator/resources;
// cdi-operator's cluster.NewDataVolumeCrd only decodes that string, and
// importing it directly keeps CDI's Kubernetes 0.31 pins out of this module.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	cdiresources "kubevirt.io/containerized-data-importer/pkg/operator/resources"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"sigs.k8s.io/yaml"
)

func main() {
	out := flag.String("out", "", "directory to write the generated CRDs to")
	verify := flag.String("verify", "", "directory whose *.yaml CRD files to check")
	flag.Parse()
	if (*out == "") == (*verify == "") || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: crdgen -out DIR | -verify DIR")
		os.Exit(2)
	}
	var err error
	if *out != "" {
		err = generate(*out)
	} else {
		err = verifyDir(*verify)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crdgen:", err)
		os.Exit(1)
	}
}

func generate(dir string) error {
	dv, err := dataVolumeCRD()
	if err != nil {
		return err
	}
	crds := []struct {
		name string
		new  func() (*extv1.CustomResourceDefinition, error)
	}{
		{"virtualmachines", components.NewVirtualMachineCrd},
		{"virtualmachineinstances", components.NewVirtualMachineInstanceCrd},
		{"datavolumes", func() (*extv1.CustomResourceDefinition, error) { return dv, nil }},
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, c := range crds {
		crd, err := c.new()
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		crd.APIVersion, crd.Kind = "apiextensions.k8s.io/v1", "CustomResourceDefinition"
		if err := check(crd); err != nil {
			return err
		}
		b, err := marshal(crd)
		if err != nil {
			return fmt.Errorf("%s: %w", crd.Name, err)
		}
		path := filepath.Join(dir, crd.Spec.Group+"_"+crd.Spec.Names.Plural+".yaml")
		if err := os.WriteFile(path, append([]byte("---\n"), b...), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// dataVolumeCRD decodes the DataVolume CRD the same way CDI's
// cluster.NewDataVolumeCrd does, but does not swallow decode errors.
func dataVolumeCRD() (*extv1.CustomResourceDefinition, error) {
	src, ok := cdiresources.CDICRDs["datavolume"]
	if !ok {
		return nil, errors.New(`CDI resources.CDICRDs has no "datavolume" entry`)
	}
	crd := &extv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict([]byte(src), crd); err != nil {
		return nil, fmt.Errorf("CDI datavolume CRD: %w", err)
	}
	return crd, nil
}

func verifyDir(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no *.yaml files in %s", dir)
	}
	sort.Strings(files)
	seen := map[string]string{}
	var errs []error
	for _, f := range files {
		names, err := verifyFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
		for _, n := range names {
			if prev, dup := seen[n]; dup {
				errs = append(errs, fmt.Errorf("%s: CRD %s is also defined in %s", f, n, prev))
			}
			seen[n] = f
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("crdgen: %d CRDs in %d files under %s are valid\n", len(seen), len(files), dir)
	return nil
}

func verifyFile(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var names []string
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return names, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		crd := &extv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(doc, crd); err != nil {
			return names, err
		}
		if err := check(crd); err != nil {
			return names, err
		}
		names = append(names, crd.Name)
	}
	if len(names) == 0 {
		return nil, errors.New("no CRD in file")
	}
	return names, nil
}

// check makes sure a CRD installs into a plain kube-apiserver: v1, exactly one
// storage version, no conversion webhook, and a structural schema everywhere.
func check(crd *extv1.CustomResourceDefinition) error {
	if crd.APIVersion != "apiextensions.k8s.io/v1" || crd.Kind != "CustomResourceDefinition" {
		return fmt.Errorf("%s: not an apiextensions.k8s.io/v1 CustomResourceDefinition (%s %s)", crd.Name, crd.APIVersion, crd.Kind)
	}
	if want := crd.Spec.Names.Plural + "." + crd.Spec.Group; crd.Name != want {
		return fmt.Errorf("CRD name %q, want %q", crd.Name, want)
	}
	if c := crd.Spec.Conversion; c != nil && c.Strategy != extv1.NoneConverter {
		return fmt.Errorf("%s: conversion strategy %s needs a webhook", crd.Name, c.Strategy)
	}
	storage := 0
	var errs field.ErrorList
	for i, v := range crd.Spec.Versions {
		fld := field.NewPath("spec", "versions").Index(i).Child("schema", "openAPIV3Schema")
		if v.Storage {
			storage++
		}
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			errs = append(errs, field.Required(fld, "version "+v.Name+" has no schema"))
			continue
		}
		internal := &apiextensions.JSONSchemaProps{}
		if err := extv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, internal, nil); err != nil {
			return fmt.Errorf("%s %s: %w", crd.Name, v.Name, err)
		}
		s, err := schema.NewStructural(internal)
		if err != nil {
			errs = append(errs, field.Invalid(fld, v.Name, err.Error()))
			continue
		}
		errs = append(errs, schema.ValidateStructural(fld, s)...)
	}
	if storage != 1 {
		errs = append(errs, field.Invalid(field.NewPath("spec", "versions"), storage, "exactly one version must be the storage version"))
	}
	if err := errs.ToAggregate(); err != nil {
		return fmt.Errorf("%s: %w", crd.Name, err)
	}
	return nil
}

// stripComments drops comment-only lines so a document holding nothing but a
// license header is skipped.
func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' && string(t) != "---" {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// marshal renders a CRD as YAML without the empty status block Go's zero
// value would add (the apiserver owns status).
func marshal(crd *extv1.CustomResourceDefinition) ([]byte, error) {
	j, err := json.Marshal(crd)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	return yaml.Marshal(m)
}
