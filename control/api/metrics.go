package api

import (
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"xnat/control/daemon"
	"xnat/dataplane"
	"xnat/dataplane/xdpprog"
	"xnat/ring"
)

// collector exposes the daemon's counters to Prometheus. It reads
// daemon.Stats at scrape time: nothing is counted for it on the packet
// path.
type collector struct {
	d       *daemon.Daemon
	names   []string
	nInside int

	ifPackets, ifBytes          *prometheus.Desc
	conns, connsMax, connsCap   *prometheus.Desc
	mappings, mappingsMax       *prometheus.Desc
	table                       []tableMetric
	drops                       *prometheus.Desc
	pipeline                    []pipelineMetric
	nat                         []natMetric
	xdp                         *prometheus.Desc
	rings                       []ringMetric
	replacements, flushed, envs *prometheus.Desc
}

type tableMetric struct {
	desc *prometheus.Desc
	get  func(s *daemon.Stats) uint64
}

type pipelineMetric struct {
	desc *prometheus.Desc
	get  func(c *dataplane.Counters) uint64
}

type natMetric struct {
	desc  *prometheus.Desc
	gauge bool
	get   func(s *daemon.Stats) uint64
}

type ringMetric struct {
	desc *prometheus.Desc
	get  func(s *ring.SocketStats) uint64
}

func newCollector(d *daemon.Daemon, names []string, nInside int) *collector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("xnat_"+name, help, labels, nil)
	}
	c := &collector{d: d, names: names, nInside: nInside,
		ifPackets:    desc("interface_packets_total", "Packets through xnat by interface and direction.", "interface", "role", "direction"),
		ifBytes:      desc("interface_bytes_total", "Bytes (IP total length) through xnat by interface and direction.", "interface", "role", "direction"),
		conns:        desc("connections", "Connections in the table (nf_conntrack_count)."),
		connsMax:     desc("connections_max", "The connection limit (nf_conntrack_max)."),
		mappings:     desc("mappings", "Full-cone mappings (FULLCONENAT) live."),
		mappingsMax:  desc("mappings_max", "The full-cone mapping limit (xnat.fullcone_max)."),
		connsCap:     desc("connections_capacity", "The table's fixed capacity."),
		drops:        desc("drops_total", "Packets dropped, by reason.", "reason"),
		xdp:          desc("xdp_packets_total", "Packets seen by the XDP program, by what it did.", "interface", "mode", "action"),
		replacements: desc("rule_replacements_total", "Rule sets swapped in."),
		flushed:      desc("masquerade_flushed_total", "Connections flushed because their masquerading address went away."),
		envs:         desc("env_errors_total", "Kernel changes that could not be applied."),
	}
	c.table = []tableMetric{
		{desc("connections_expired_total", "Connections that timed out."), func(s *daemon.Stats) uint64 { return s.Table.Expired }},
		{desc("conntrack_inserts_total", "Connections inserted."), func(s *daemon.Stats) uint64 { return s.Table.Insert }},
		{desc("conntrack_insert_failed_total", "Inserts that lost a race or found no index slot."), func(s *daemon.Stats) uint64 { return s.Table.InsertFailed }},
		{desc("conntrack_drop_total", "New connections refused: table full and nothing evictable."), func(s *daemon.Stats) uint64 { return s.Table.Drop }},
		{desc("conntrack_early_drop_total", "Unassured connections evicted to make room."), func(s *daemon.Stats) uint64 { return s.Table.EarlyDrop }},
		{desc("conntrack_deleted_total", "Connections deleted (conntrack -D/-F, flushes)."), func(s *daemon.Stats) uint64 { return s.Table.Deleted }},
		{desc("conntrack_found_total", "Lookups that found a connection."), func(s *daemon.Stats) uint64 { return s.Table.Found }},
		{desc("conntrack_invalid_total", "Packets that could not be tracked."), func(s *daemon.Stats) uint64 { return s.Table.Invalid }},
	}
	c.pipeline = []pipelineMetric{
		{desc("connections_created_total", "Connections created by the pipelines."), func(p *dataplane.Counters) uint64 { return p.Created }},
		{desc("forwarded_total", "Frames forwarded."), func(p *dataplane.Counters) uint64 { return p.Forwarded }},
		{desc("replies_total", "ICMP errors and TCP resets generated."), func(p *dataplane.Counters) uint64 { return p.Replies }},
		{desc("to_kernel_total", "Frames handed to the kernel."), func(p *dataplane.Counters) uint64 { return p.ToKernel }},
		{desc("neigh_queued_total", "Frames held while their next hop was resolved."), func(p *dataplane.Counters) uint64 { return p.NeighQueued }},
		{desc("batches_total", "Pipeline batches."), func(p *dataplane.Counters) uint64 { return p.Batches }},
		{desc("mappings_created_total", "Full-cone mappings created."), func(p *dataplane.Counters) uint64 { return p.MapCreated }},
		{desc("mappings_reused_total", "Connections that reused their inside endpoint's full-cone mapping."), func(p *dataplane.Counters) uint64 { return p.MapReused }},
		{desc("mappings_expired_total", "Full-cone mappings that timed out after their last connection."), func(p *dataplane.Counters) uint64 { return p.MapExpired }},
		{desc("mappings_inbound_total", "Connections admitted inbound through a full-cone mapping."), func(p *dataplane.Counters) uint64 { return p.MapInbound }},
		{desc("mappings_failed_total", "Connections that could not have or join a full-cone mapping."), func(p *dataplane.Counters) uint64 { return p.MapFailed }},
	}
	c.nat = []natMetric{
		{desc("nat_allocations_total", "Connections given an external endpoint."), false, func(s *daemon.Stats) uint64 { return s.Ports.Allocated }},
		{desc("nat_preserved_total", "Allocations that kept the original port."), false, func(s *daemon.Stats) uint64 { return s.Ports.Preserved }},
		{desc("nat_released_total", "Ports given back."), false, func(s *daemon.Stats) uint64 { return s.Ports.Released }},
		{desc("nat_out_of_ports_total", "Allocations that found no free port."), false, func(s *daemon.Stats) uint64 { return s.Ports.OutOfPorts }},
		{desc("nat_per_source_limit_total", "Allocations refused by the per-source limit."), false, func(s *daemon.Stats) uint64 { return s.Ports.PerSourceLimit }},
		{desc("nat_per_source_full_total", "Allocations refused for want of a slot in the per-source limiter."), false, func(s *daemon.Stats) uint64 { return s.Ports.LimiterFull }},
		{desc("nat_ports_in_use", "Ports carrying at least one connection."), true, func(s *daemon.Stats) uint64 { return s.Ports.PortsInUse }},
	}
	rl := []string{"queue", "interface"}
	c.rings = []ringMetric{
		{desc("xsk_rx_total", "Descriptors taken from the RX ring.", rl...), func(s *ring.SocketStats) uint64 { return s.Rx }},
		{desc("xsk_tx_total", "Descriptors put on the TX ring.", rl...), func(s *ring.SocketStats) uint64 { return s.Tx }},
		{desc("xsk_completed_total", "Frames taken back from the completion ring.", rl...), func(s *ring.SocketStats) uint64 { return s.Completed }},
		{desc("xsk_filled_total", "Frames put on the fill ring.", rl...), func(s *ring.SocketStats) uint64 { return s.Filled }},
		{desc("xsk_tx_ring_full_total", "Transmits refused by a full TX ring.", rl...), func(s *ring.SocketStats) uint64 { return s.TxRingFull }},
		{desc("xsk_completion_lag_total", "Transmits refused while the completion ring's worth was in flight.", rl...), func(s *ring.SocketStats) uint64 { return s.CompletionLag }},
		{desc("xsk_fill_ring_empty_total", "Refills that found the fill ring empty.", rl...), func(s *ring.SocketStats) uint64 { return s.FillRingEmpty }},
		{desc("xsk_fill_no_frames_total", "Refills that found no free frame.", rl...), func(s *ring.SocketStats) uint64 { return s.FillNoFrames }},
		{desc("xsk_wakeups_total", "Kernel kicks.", rl...), func(s *ring.SocketStats) uint64 { return s.Wakeups }},
		{desc("xsk_kick_errors_total", "Kicks that failed.", rl...), func(s *ring.SocketStats) uint64 { return s.KickErrors }},
		{desc("xsk_kernel_rx_dropped_total", "XDP_STATISTICS rx_dropped.", rl...), func(s *ring.SocketStats) uint64 { return s.RxDropped }},
		{desc("xsk_kernel_rx_ring_full_total", "XDP_STATISTICS rx_ring_full.", rl...), func(s *ring.SocketStats) uint64 { return s.RxRingFull }},
		{desc("xsk_kernel_rx_fill_ring_empty_total", "XDP_STATISTICS rx_fill_ring_empty_descs.", rl...), func(s *ring.SocketStats) uint64 { return s.RxFillRingEmptyDescs }},
		{desc("xsk_kernel_tx_ring_empty_total", "XDP_STATISTICS tx_ring_empty_descs.", rl...), func(s *ring.SocketStats) uint64 { return s.TxRingEmptyDescs }},
		{desc("xsk_kernel_invalid_descs_total", "XDP_STATISTICS rx and tx invalid descriptors.", rl...), func(s *ring.SocketStats) uint64 { return s.RxInvalidDescs + s.TxInvalidDescs }},
	}
	return c
}

// xdpActions name the XDP program's counters.
var xdpActions = [xdpprog.NumCounters]string{
	xdpprog.CtrToXnatForward:  "to_xnat_forward",
	xdpprog.CtrToXnatLocal:    "to_xnat_local",
	xdpprog.CtrRedirectFailed: "redirect_failed",
	xdpprog.CtrPassNotIPv4:    "pass_not_ipv4",
	xdpprog.CtrPassLocal:      "pass_local",
	xdpprog.CtrPassMalformed:  "pass_malformed",
	xdpprog.CtrPassBroadcast:  "pass_broadcast",
	xdpprog.CtrPassVLAN:       "pass_vlan",
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.ifPackets, c.ifBytes, c.conns, c.connsMax, c.connsCap, c.mappings, c.mappingsMax, c.drops, c.xdp,
		c.replacements, c.flushed, c.envs} {
		ch <- d
	}
	for _, m := range c.table {
		ch <- m.desc
	}
	for _, m := range c.pipeline {
		ch <- m.desc
	}
	for _, m := range c.nat {
		ch <- m.desc
	}
	for _, m := range c.rings {
		ch <- m.desc
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.d.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for i, n := range c.names {
		role := "outside"
		if i < c.nInside {
			role = "inside"
		}
		p := s.Pipeline.Ports[i]
		counter(c.ifPackets, p.RxPackets, n, role, "rx")
		counter(c.ifPackets, p.TxPackets, n, role, "tx")
		counter(c.ifBytes, p.RxBytes, n, role, "rx")
		counter(c.ifBytes, p.TxBytes, n, role, "tx")
	}
	gauge(c.conns, float64(s.Conns))
	gauge(c.connsMax, float64(s.Max))
	gauge(c.mappings, float64(s.Mappings))
	gauge(c.mappingsMax, float64(s.MappingsMax))
	gauge(c.connsCap, float64(s.Capacity))
	for _, m := range c.table {
		counter(m.desc, m.get(&s))
	}
	for _, r := range dataplane.Reasons() {
		counter(c.drops, s.Pipeline.Drop(r), r.String())
	}
	for _, m := range c.pipeline {
		counter(m.desc, m.get(&s.Pipeline))
	}
	for _, m := range c.nat {
		if m.gauge {
			gauge(m.desc, float64(m.get(&s)))
		} else {
			counter(m.desc, m.get(&s))
		}
	}
	for _, p := range s.Programs {
		for i, a := range xdpActions {
			counter(c.xdp, p.Counters[i], p.Interface, p.Mode, a)
		}
	}
	for q, socks := range s.Sockets {
		for i := range socks {
			name := strconv.Itoa(i)
			if i < len(c.names) {
				name = c.names[i]
			}
			for _, m := range c.rings {
				counter(m.desc, m.get(&socks[i]), strconv.Itoa(q), name)
			}
		}
	}
	counter(c.replacements, s.RuleReplacements)
	counter(c.flushed, s.Flushed)
	counter(c.envs, s.EnvErrors)
}

// MetricsHandler returns the Prometheus handler over the daemon's
// counters (plus the Go runtime's and the process's).
func (s *Server) MetricsHandler() (http.Handler, error) {
	reg := prometheus.NewRegistry()
	for _, col := range []prometheus.Collector{newCollector(s.d, s.names, s.nInside),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}), nil
}

// ServeMetrics serves /metrics on a TCP address until Close and returns
// the address it listens on. Whether the address may be remote is the
// configuration's business (daemon.Config.Metrics).
func (s *Server) ServeMetrics(addr string) (net.Addr, error) {
	h, err := s.MetricsHandler()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	if err := s.serveHandler(ln, mux); err != nil {
		return nil, err
	}
	return ln.Addr(), nil
}
