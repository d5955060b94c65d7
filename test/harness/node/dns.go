package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Cluster DNS. The harness runs no CoreDNS, yet charts name in-cluster Services by their DNS
// names (cluster-autoscaler dials the autoscaler-provider at <svc>.<ns>.svc). Every node
// therefore answers its pods' DNS queries itself, at ClusterDNSIP inside its network
// namespace (the kubelet writes it into each pod's resolv.conf as clusterDNS, with the usual
// search path), with what kube-dns would answer for Services: the A record of
// <service>.<namespace>.svc.cluster.local is the Service's ClusterIP, read from the node's
// cluster. Nothing else is resolved (no pod records, no headless Services, no upstream
// forwarding: nothing here leaves the machine).
const (
	// ClusterDNSIP is NodeLocal DNSCache's conventional link-local address, outside every
	// Service and pod range, so kube-proxy never rewrites traffic to it.
	ClusterDNSIP = "169.254.20.10"
	// ClusterDomain is the kubelet's clusterDomain.
	ClusterDomain = "cluster.local"
	dnsTTL        = 5
)

// dnsServer answers Service queries on one UDP socket.
type dnsServer struct {
	conn net.PacketConn
	c    client.Client
	wg   sync.WaitGroup
}

// serveDNS puts ClusterDNSIP on the node's loopback and answers there from c.
func (n *Node) serveDNS(ctx context.Context, c client.Client) error {
	if err := run(ctx, "ip", "-n", n.netns, "addr", "add", ClusterDNSIP+"/32", "dev", "lo"); err != nil {
		return fmt.Errorf("node %s: the cluster DNS address: %w", n.Name, err)
	}
	s := &dnsServer{c: c}
	err := inNetNS(n.NetNS, func() (err error) {
		s.conn, err = net.ListenPacket("udp", net.JoinHostPort(ClusterDNSIP, "53"))
		return err
	})
	if err != nil {
		if s.conn != nil {
			_ = s.conn.Close()
		}
		return fmt.Errorf("node %s: cluster DNS: %w", n.Name, err)
	}
	n.dns = s
	s.wg.Add(1)
	go s.serve()
	return nil
}

func (s *dnsServer) serve() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		nr, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return // closed by stop
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := s.answer(ctx, buf[:nr])
		cancel()
		if err != nil {
			klog.V(2).InfoS("Node DNS: cannot answer", "from", from, "err", err)
			continue
		}
		_, _ = s.conn.WriteTo(out, from)
	}
}

func (s *dnsServer) stop() {
	if s == nil {
		return
	}
	_ = s.conn.Close()
	s.wg.Wait()
}

// answer builds the response to one query message.
func (s *dnsServer) answer(ctx context.Context, query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, fmt.Errorf("parsing query: %w", err)
	}
	q, err := p.Question()
	if err != nil {
		return nil, fmt.Errorf("parsing question: %w", err)
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RCode: dnsmessage.RCodeSuccess}
	ip, found, err := s.lookup(ctx, q)
	switch {
	case err != nil:
		rh.RCode = dnsmessage.RCodeServerFailure
		klog.V(2).InfoS("Node DNS: lookup failed", "name", q.Name.String(), "err", err)
	case !found:
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	// An existing name asked for AAAA (or anything but A) gets no records and NOERROR, so
	// resolvers that ask for both families take the A record.
	if found && ip.Is4() && q.Type == dnsmessage.TypeA {
		rr := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		if err := b.AResource(rr, dnsmessage.AResource{A: ip.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// lookup resolves <service>.<namespace>.svc.<ClusterDomain> to the Service's ClusterIP.
func (s *dnsServer) lookup(ctx context.Context, q dnsmessage.Question) (netip.Addr, bool, error) {
	svc, ns, ok := ServiceName(q.Name.String())
	if !ok || q.Class != dnsmessage.ClassINET {
		return netip.Addr{}, false, nil
	}
	obj := &corev1.Service{}
	if err := s.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: svc}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return netip.Addr{}, false, nil
		}
		return netip.Addr{}, false, err
	}
	ip, err := netip.ParseAddr(obj.Spec.ClusterIP)
	if err != nil {
		return netip.Addr{}, false, nil // headless or ExternalName: not served here
	}
	return ip, true, nil
}

// ServiceName splits a query name into Service and namespace when it is exactly
// <service>.<namespace>.svc.<ClusterDomain> (case-insensitive, with or without the final dot).
func ServiceName(name string) (svc, namespace string, ok bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	rest, found := strings.CutSuffix(name, ".svc."+ClusterDomain)
	if !found {
		return "", "", false
	}
	svc, namespace, found = strings.Cut(rest, ".")
	if !found || svc == "" || namespace == "" || strings.Contains(namespace, ".") {
		return "", "", false
	}
	return svc, namespace, true
}
