package virtapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// grantAddVolume gives user update on virtualmachines/addvolume in ns, the least a component
// needs to hot-plug through the VM. It grants nothing on the VMs themselves: virt-api writes
// them with its own identity.
func grantAddVolume(t *testing.T, ns, user string) {
	t.Helper()
	ctx := ctxT(t)
	c := env.Management.Client
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hotplug-" + user},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{Group},
			Resources: []string{"virtualmachines/addvolume"},
			Verbs:     []string{"update"},
		}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hotplug-" + user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if err := c.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
}

// pollUntil retries f until it returns done or the deadline passes; RBAC changes reach the
// apiserver's authorizer through an informer, so the first call after a grant may still fail.
func pollUntil(t *testing.T, f func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctxT(t), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return f()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRBACThroughAggregator(t *testing.T) {
	server(t)
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	user, err := env.Management.AddUser("hotplugger")
	if err != nil {
		t.Fatal(err)
	}
	kv := kubevirtClient(t, user.Config).KubevirtV1()
	ctx := ctxT(t)

	err = kv.VirtualMachines(ns).AddVolume(ctx, "vm-1", pvcOptions("data", "pvc-data", "d", kubevirtv1.DiskBusVirtio))
	if !apierrors.IsForbidden(err) {
		t.Fatalf("AddVolume without RBAC: want Forbidden, got %v", err)
	}

	grantAddVolume(t, ns, "hotplugger")
	pollUntil(t, func() (bool, error) {
		err := kv.VirtualMachines(ns).AddVolume(ctx, "vm-1", pvcOptions("data", "pvc-data", "d", kubevirtv1.DiskBusVirtio))
		if apierrors.IsForbidden(err) {
			return false, nil
		}
		return true, err
	})
	if vol, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "data"); vol == nil {
		t.Fatal("granted AddVolume did not change the VM")
	}
	// The grant covers addvolume only.
	err = kv.VirtualMachines(ns).RemoveVolume(ctx, "vm-1", &kubevirtv1.RemoveVolumeOptions{Name: "data"})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("RemoveVolume with only addvolume granted: want Forbidden, got %v", err)
	}
}

// frontProxyClient returns an HTTPS client for the sim's port that presents the management
// apiserver's front-proxy certificate, i.e. plays kube-apiserver's aggregator. The harness
// writes that key pair next to the CA it exports.
func frontProxyClient(t *testing.T, s *Server) *http.Client {
	t.Helper()
	dir := filepath.Dir(env.FrontProxyCAFile)
	certFile, keyFile := filepath.Join(dir, "front-proxy-client.crt"), filepath.Join(dir, "front-proxy-client.key")
	// The harness always writes it (certs.go): a missing key is a harness bug, not a machine
	// that cannot run the test.
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("harness front-proxy client pair: %v", err)
	}
	return httpsClient(t, s, &cert)
}

func httpsClient(t *testing.T, s *Server, cert *tls.Certificate) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.CABundle()) {
		t.Fatal("bad CA bundle")
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: "virt-api.kubevirt.svc", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func directPut(t *testing.T, c *http.Client, s *Server, path string, headers map[string][]string, body any) (*http.Response, string, error) {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPut, "https://"+s.Addr()+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out), nil
}

// The sim's own authorization, reached directly as the aggregator would (kube-apiserver's
// authorizer already stops unprivileged callers before the proxy, so only direct calls show
// that the sim checks too, as upstream virt-api does).
func TestDirectCallsAreAuthenticatedAndAuthorized(t *testing.T) {
	s := server(t)
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	path := "/apis/" + GroupVersion + "/namespaces/" + ns + "/virtualmachines/vm-1/addvolume"
	body := pvcOptions("data", "pvc-data", "d", kubevirtv1.DiskBusVirtio)
	proxy := frontProxyClient(t, s)
	as := func(user string, groups ...string) map[string][]string {
		return map[string][]string{"X-Remote-User": {user}, "X-Remote-Group": groups}
	}

	t.Run("discovery needs no certificate", func(t *testing.T) {
		resp, err := httpsClient(t, s, nil).Get("https://" + s.Addr() + "/apis/" + GroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("discovery: %s", resp.Status)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		resp, text, err := directPut(t, httpsClient(t, s, nil), s, path, as("system:admin", "system:masters"), body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(text, "not authenticated") {
			t.Fatalf("got %s %q, want 401 not authenticated", resp.Status, text)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		rogue := selfSignedClientCert(t, "front-proxy-client")
		c := httpsClient(t, s, nil)
		// Present it even though the server asks for the front-proxy CA (Go's client would
		// otherwise quietly send none).
		c.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &rogue, nil
		}
		resp, text, err := directPut(t, c, s, path, as("system:admin", "system:masters"), body)
		if err == nil {
			t.Fatalf("a certificate not signed by the front-proxy CA was accepted: %s %q", resp.Status, text)
		}
	})
	t.Run("missing group header", func(t *testing.T) {
		resp, text, err := directPut(t, proxy, s, path, map[string][]string{"X-Remote-User": {"system:admin"}}, body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(text, "group header") {
			t.Fatalf("got %s %q, want 401 about the group header", resp.Status, text)
		}
	})
	t.Run("user without RBAC is refused by the SubjectAccessReview", func(t *testing.T) {
		resp, text, err := directPut(t, proxy, s, path, as("mallory", "system:authenticated"), body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("got %s %q, want 401 as upstream virt-api answers a denied review", resp.Status, text)
		}
		if vol, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "data"); vol != nil {
			t.Fatal("refused request changed the VM")
		}
	})
	t.Run("granted user is allowed", func(t *testing.T) {
		grantAddVolume(t, ns, "trent")
		pollUntil(t, func() (bool, error) {
			resp, text, err := directPut(t, proxy, s, path, as("trent", "system:authenticated"), body)
			if err != nil {
				return false, err
			}
			switch resp.StatusCode {
			case http.StatusUnauthorized:
				return false, nil
			case http.StatusAccepted:
				return true, nil
			}
			return false, errors.New(resp.Status + ": " + text)
		})
	})
}

func selfSignedClientCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
