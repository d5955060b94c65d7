// Command apiprobe is what a pod on the harness's real nodes runs to show it reaches the
// tenant apiserver as pods do in a cluster: through the `kubernetes` Service
// ($KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, which kube-proxy forwards) with the
// projected ServiceAccount token and CA. It asks the apiserver who it is (a SelfSubjectReview,
// which every authenticated identity may create) and writes "ok user=<user> pod-uid=<uid> via
// <host:port>" to its termination message: the test compares them with the pod's
// ServiceAccount and UID, which the apiserver reads from the pod-bound token.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	msg, err := probe()
	if err != nil {
		// The pod's routes tell a network failure from an API one.
		routes, _ := os.ReadFile("/proc/net/route")
		msg = "error: " + err.Error() + "\nroutes:\n" + string(routes)
	}
	_ = os.WriteFile("/dev/termination-log", []byte(msg), 0o644)
	fmt.Println(msg)
	if err != nil {
		os.Exit(1)
	}
}

func probe() (string, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
	}
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return "", fmt.Errorf("reading the ServiceAccount token: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return "", fmt.Errorf("reading the cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return "", errors.New("no certificate in ca.crt")
	}
	// Verified as in-cluster clients do: the Service IP must be in the serving certificate.
	tlsCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	addr := net.JoinHostPort(host, port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := strings.NewReader(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/apis/authentication.k8s.io/v1/selfsubjectreviews", body)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("SelfSubjectReview via %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("SelfSubjectReview via %s: %s", addr, resp.Status)
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string              `json:"username"`
				Extra    map[string][]string `json:"extra"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
		return "", fmt.Errorf("decoding the SelfSubjectReview: %w", err)
	}
	u := review.Status.UserInfo
	return fmt.Sprintf("ok user=%s pod-uid=%s via %s", u.Username,
		strings.Join(u.Extra["authentication.kubernetes.io/pod-uid"], ","), addr), nil
}
