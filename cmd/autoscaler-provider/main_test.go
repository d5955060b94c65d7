package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"--help"}, 0, `(default ":8086")`},
		{[]string{"--help"}, 0, `--tls-ca`},
		{[]string{"--config", "x.yaml", "--tls-cert", "c.pem"}, 2, "--tls-cert and --tls-key must be given together"},
		{[]string{"--config", "x.yaml", "--tls-key", "k.pem"}, 2, "--tls-cert and --tls-key must be given together"},
		{[]string{"--config", "x.yaml", "--tls-ca", "ca.pem"}, 2, "--tls-ca needs --tls-cert and --tls-key"},
		{[]string{"--config", "x.yaml", "--listen", ""}, 2, "--listen must not be empty"},
		// Flags pass, so the missing file is what fails: exit 1, not a usage error.
		{[]string{"--config", "x.yaml", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca"}, 1, "loading config x.yaml"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run(tt.args, &out, &out); code != tt.wantCode || !strings.Contains(out.String(), tt.want) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, &out, tt.wantCode, tt.want)
		}
	}
}
