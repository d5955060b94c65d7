// Package chartrender runs `helm template` on the charts in deploy/charts and decodes the result,
// for the tests that check the charts against real apiservers, run the programs with the
// chart's roles and flags, and for the sandbox, which gives each component the identity and
// roles the charts define. The charts are the one source of how the programs are deployed;
// this is test tooling and nothing in pkg/ or cmd/'s programs imports it.
package chartrender

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"
)

// ChartDir is the directory of chart name in this repository (found from this file's path).
func ChartDir(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "charts", name)
}

// Helm runs the helm binary with args and returns its stdout, keeping helm away from the
// user's helm configuration and caches (they go to a temporary directory).
func Helm(ctx context.Context, helm string, args ...string) ([]byte, error) {
	home, err := os.MkdirTemp("", "tenantcloud-helm-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(home) }()
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config",
		"HELM_DATA_HOME="+home+"/data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.Bytes(), nil
}

// Template renders chart (a name under deploy/charts) as release into namespace with the
// --set values, and returns the objects.
func Template(ctx context.Context, helm, chart, release, namespace string, sets ...string) ([]*unstructured.Unstructured, error) {
	args := []string{"template", release, ChartDir(chart), "--namespace", namespace}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := Helm(ctx, helm, args...)
	if err != nil {
		return nil, err
	}
	objs, err := Decode(out)
	if err != nil {
		return nil, fmt.Errorf("decoding helm template %s: %w", chart, err)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("helm template %s rendered nothing", chart)
	}
	return objs, nil
}

// Decode splits a multi-document YAML stream into objects, skipping empty documents.
func Decode(out []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := sigsyaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("%w in:\n%s", err, doc)
		}
		if len(m) == 0 {
			continue // an empty document (comments only)
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// Placed returns a copy of o to create on c: a namespaced object goes into ns (the release's
// namespace), a cluster-scoped one as rendered. namespaced says which it is.
func Placed(c client.Client, ns string, o *unstructured.Unstructured) (placed *unstructured.Unstructured, namespaced bool, err error) {
	namespaced, err = c.IsObjectNamespaced(o)
	if err != nil {
		return nil, false, fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err)
	}
	placed = o.DeepCopy()
	if namespaced {
		placed.SetNamespace(ns)
	}
	return placed, namespaced, nil
}

// Find returns the object of kind and name, or nil.
func Find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// ContainerArgs returns the args of container in the rendered workload (Deployment,
// DaemonSet) kind/name.
func ContainerArgs(objs []*unstructured.Unstructured, kind, name, container string) ([]string, error) {
	o := Find(objs, kind, name)
	if o == nil {
		return nil, fmt.Errorf("rendered no %s %s", kind, name)
	}
	cs, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	for _, c := range cs {
		m, _ := c.(map[string]any)
		if m["name"] != container {
			continue
		}
		args, _, err := unstructured.NestedStringSlice(m, "args")
		if err != nil {
			return nil, fmt.Errorf("%s %s container %s: %w", kind, name, container, err)
		}
		return args, nil
	}
	return nil, fmt.Errorf("%s %s has no container %s", kind, name, container)
}

// LocalArgs replaces the flags named in set (the in-pod paths and endpoints) with local
// values, keeping every other rendered flag as the chart wrote it, and appends flags set names
// that the chart did not render.
func LocalArgs(args []string, set map[string]string) []string {
	out := make([]string, 0, len(args)+len(set))
	done := map[string]bool{}
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		if v, ok := set[name]; ok {
			out = append(out, name+"="+v)
			done[name] = true
			continue
		}
		out = append(out, a)
	}
	for name, v := range set {
		if !done[name] {
			out = append(out, name+"="+v)
		}
	}
	return out
}

// Role returns the rendered Role name as a typed object.
func Role(objs []*unstructured.Unstructured, name string) (*rbacv1.Role, error) {
	o := Find(objs, "Role", name)
	if o == nil {
		return nil, fmt.Errorf("rendered no Role %s", name)
	}
	role := &rbacv1.Role{}
	if err := kruntime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
		return nil, fmt.Errorf("Role %s: %w", name, err)
	}
	return role, nil
}
