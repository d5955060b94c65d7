package metallb

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// stopGrace is how long Stop waits after SIGTERM before SIGKILL. MetalLB's manager shuts down
// in well under a second most of the time, but was seen to hang in a reconcile begun at the
// signal: then it is killed, as the kubelet would after a pod's grace period. The process
// itself is supervised by the harness (harness.Process), as every other child of the tests.
const stopGrace = 10 * time.Second

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a moment ago. The
// listeners are held until all ports are picked so the same port is not returned twice.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the last max bytes of a file, for error messages.
func tail(path string, max int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if len(data) > max {
		data = data[len(data)-max:]
		if i := strings.IndexByte(string(data), '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	return string(data)
}

// exitError describes why the child ended early, with its log.
func exitError(err error, logFile string) error {
	if err == nil {
		err = errors.New("exited with status 0")
	}
	return fmt.Errorf("metallb-controller exited during start-up: %w; log %s:\n%s", err, logFile, tail(logFile, 4000))
}
