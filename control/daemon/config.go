package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"xnat/dataplane"
	"xnat/dataplane/xdpprog"
	"xnat/flowtable"
	"xnat/portalloc"
	"xnat/ring"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid configuration")

// Defaults of Config's zero fields.
const (
	DefaultQueues   = 1
	DefaultCapacity = 262144
	MaxQueues       = xdpprog.DefaultQueues
)

// Config is the daemon's configuration: what the config file holds (TOML,
// keys as in the struct tags) and what xnatd's flags override.
type Config struct {
	// Inside and Outside name the interfaces xnat forwards between, by
	// role: unsolicited traffic arriving on an outside interface is
	// dropped, and MASQUERADE and hairpinning use outside addresses.
	Inside  []string `toml:"inside"`
	Outside []string `toml:"outside"`
	// Queues is the number of queues served on every interface, one
	// worker per queue index (queue q of every interface belongs to
	// worker q).
	Queues int `toml:"queues"`
	// CPUs pins worker q to CPUs[q]; empty leaves them unpinned.
	CPUs []int `toml:"cpus"`
	// Capacity is the flow table's fixed size (connections), MaxConns its
	// run-time limit (nf_conntrack_max, at most Capacity; 0: Capacity).
	Capacity int `toml:"capacity"`
	MaxConns int `toml:"max_conns"`
	// Timeouts set conntrack timeouts by sysctl name, in seconds:
	// nf_conntrack_tcp_timeout_established = 7200.
	Timeouts map[string]int64 `toml:"timeouts"`
	// Rules is an iptables-save file (filter and nat tables); empty
	// means no rules (every built-in chain empty, policy ACCEPT: xnat
	// forwards without translation). The file is the whole rule set, at
	// start and on every reload (SIGHUP): a table it does not name is
	// empty with policy ACCEPT, and a reload drops the changes made since
	// through xnatctl, so a reload and a restart give the same rules. A
	// relative path in a config file is relative to the file's directory.
	Rules string `toml:"rules"`
	// Socket is the path of the control socket (for xnatctl; the daemon
	// checks its directory exists).
	Socket string `toml:"socket"`
	// Poll is "sleep" (poll(2) with a timeout when idle; the default) or
	// "busy" (spin: lowest latency, one core per worker at 100%).
	Poll string `toml:"poll"`
	// Bind is "auto" (zero-copy where the drivers can, else copy; the
	// default), "copy" or "zerocopy".
	Bind string `toml:"bind"`
	// XDPMode is "auto" (native, else generic; the default), "native" or
	// "generic".
	XDPMode string `toml:"xdp_mode"`
	// LocalPorts says what to do when a NAT pool's ports overlap the
	// kernel's ephemeral ports (net.ipv4.ip_local_port_range less
	// ip_local_reserved_ports): "warn" (the default) or "refuse".
	LocalPorts string `toml:"local_ports"`
	// ReplaceXDP lets xnatd replace an XDP program another program left
	// attached to an xnat interface; without it xnatd refuses to start
	// (an XDP program of xnat's own is always replaced).
	ReplaceXDP bool `toml:"replace_xdp"`
	// Metrics is the address of the Prometheus endpoint (host:port);
	// empty (the default) serves none. It must be a loopback address
	// unless MetricsAllowRemote is set.
	Metrics            string `toml:"metrics"`
	MetricsAllowRemote bool   `toml:"metrics_allow_remote"`
	// PerSourceMax and PerSourcePorts are the connections, and the
	// external ports, one inside address may have through NAT (RFC 6888
	// REQ-4; 0: no limit): xnat.per_source_max and xnat.per_source_ports,
	// which xnatctl sysctl changes at run time.
	PerSourceMax   int `toml:"per_source_max"`
	PerSourcePorts int `toml:"per_source_ports"`
	// RPFilter is net.ipv4.conf.all.rp_filter for xnat's reverse-path
	// filter (0 off, 1 strict, 2 loose; xnatctl sysctl changes it at run
	// time); nil takes the kernel's value at start, as the default's and
	// each interface's own always are.
	RPFilter *int `toml:"rp_filter"`
	// HA syncs connections with a peer (an [ha] section; see HAConfig).
	HA *HAConfig `toml:"ha"`
}

// LoadFile reads a TOML config file. Unknown keys are errors, so a
// misspelt key is not silently ignored.
func LoadFile(path string) (Config, error) {
	var c Config
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return Config{}, fmt.Errorf("%w: %s: unknown key %s", ErrConfig, path, strings.Join(keys, ", "))
	}
	if c.Rules != "" && !filepath.IsAbs(c.Rules) {
		c.Rules = filepath.Join(filepath.Dir(path), c.Rules)
	}
	return c, nil
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Queues == 0 {
		c.Queues = DefaultQueues
	}
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.MaxConns == 0 {
		c.MaxConns = c.Capacity
	}
	if c.Poll == "" {
		c.Poll = "sleep"
	}
	if c.Bind == "" {
		c.Bind = "auto"
	}
	if c.XDPMode == "" {
		c.XDPMode = "auto"
	}
	if c.LocalPorts == "" {
		c.LocalPorts = "warn"
	}
	return c
}

// Interfaces returns the inside then the outside interfaces: the order of
// the dataplane's port IDs.
func (c *Config) Interfaces() []string {
	return append(append([]string(nil), c.Inside...), c.Outside...)
}

// Validate checks c (with defaults applied) without looking at the
// system: names, counts, ranges and keywords. Prepare checks the rest.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if len(c.Inside) == 0 || len(c.Outside) == 0 {
		return bad("at least one inside and one outside interface are needed")
	}
	names := c.Interfaces()
	if n := min(dataplane.MaxPorts, ring.MaxSockets); len(names) > n {
		return bad("%d interfaces (at most %d)", len(names), n)
	}
	for i, n := range names {
		if n == "" || len(n) >= 16 || strings.ContainsAny(n, "/ \t") {
			return bad("interface name %q", n)
		}
		if slices.Contains(names[:i], n) {
			return bad("interface %s named twice", n)
		}
	}
	if c.Queues < 1 || c.Queues > MaxQueues {
		return bad("queues %d (1 to %d)", c.Queues, MaxQueues)
	}
	if len(c.CPUs) != 0 && len(c.CPUs) != c.Queues {
		return bad("%d CPUs for %d queues (one per queue, or none)", len(c.CPUs), c.Queues)
	}
	for i, cpu := range c.CPUs {
		if cpu < 0 || cpu >= 1024 {
			return bad("CPU %d", cpu)
		}
		if slices.Contains(c.CPUs[:i], cpu) {
			return bad("CPU %d given twice", cpu)
		}
	}
	if c.Capacity < c.Queues || c.Capacity > 1<<30 {
		return bad("capacity %d (%d to %d)", c.Capacity, c.Queues, 1<<30)
	}
	if c.MaxConns < 1 || c.MaxConns > c.Capacity {
		return bad("max_conns %d (1 to the capacity, %d)", c.MaxConns, c.Capacity)
	}
	names = names[:0]
	for n := range c.Timeouts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := flowtable.DefaultTimeout(n); err != nil {
			return bad("timeout %q: %w", n, err)
		}
		if s := c.Timeouts[n]; s < 1 || time.Duration(s)*time.Second > flowtable.MaxTimeout {
			return bad("timeout %s = %d s (1 to %d)", n, s, int64(flowtable.MaxTimeout/time.Second))
		}
	}
	if _, err := c.pollMode(); err != nil {
		return err
	}
	if _, err := c.bindMode(); err != nil {
		return err
	}
	if _, err := c.attachMode(); err != nil {
		return err
	}
	if c.PerSourceMax < 0 || c.PerSourceMax > portalloc.MaxSourceLimit {
		return bad("per_source_max %d (0 to %d)", c.PerSourceMax, portalloc.MaxSourceLimit)
	}
	if c.PerSourcePorts < 0 || c.PerSourcePorts > portalloc.MaxSourceLimit {
		return bad("per_source_ports %d (0 to %d)", c.PerSourcePorts, portalloc.MaxSourceLimit)
	}
	if c.RPFilter != nil && (*c.RPFilter < dataplane.RPFilterOff || *c.RPFilter > dataplane.RPFilterLoose) {
		return bad("rp_filter %d (0 off, 1 strict, 2 loose)", *c.RPFilter)
	}
	if c.HA.Enabled() {
		if _, err := c.HA.linkConfig(); err != nil {
			return err
		}
	}
	if c.LocalPorts != "warn" && c.LocalPorts != "refuse" {
		return bad("local_ports %q (warn or refuse)", c.LocalPorts)
	}
	if c.Metrics != "" {
		host, port, err := net.SplitHostPort(c.Metrics)
		if err != nil {
			return bad("metrics %q: %w", c.Metrics, err)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return bad("metrics %q: port %q (1 to 65535)", c.Metrics, port)
		}
		if !c.MetricsAllowRemote && host != "localhost" {
			if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
				return bad("metrics %q: not a loopback address (set metrics_allow_remote = true to serve metrics beyond this host)", c.Metrics)
			}
		}
	}
	return nil
}

func (c *Config) pollMode() (ring.PollMode, error) {
	switch c.Poll {
	case "sleep":
		return ring.PollSleep, nil
	case "busy":
		return ring.PollBusy, nil
	}
	return 0, fmt.Errorf("%w: poll %q (sleep or busy)", ErrConfig, c.Poll)
}

func (c *Config) bindMode() (ring.BindMode, error) {
	switch c.Bind {
	case "auto":
		return ring.BindAuto, nil
	case "copy":
		return ring.BindCopy, nil
	case "zerocopy":
		return ring.BindZeroCopy, nil
	}
	return 0, fmt.Errorf("%w: bind %q (auto, copy or zerocopy)", ErrConfig, c.Bind)
}

func (c *Config) attachMode() (xdpprog.AttachMode, error) {
	switch c.XDPMode {
	case "auto":
		return xdpprog.AttachAuto, nil
	case "native":
		return xdpprog.AttachNative, nil
	case "generic":
		return xdpprog.AttachGeneric, nil
	}
	return 0, fmt.Errorf("%w: xdp_mode %q (auto, native or generic)", ErrConfig, c.XDPMode)
}

// readRules reads the rules file (or returns the empty rule set).
func (c *Config) readRules() ([]byte, error) {
	if c.Rules == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.Rules)
	if err != nil {
		return nil, fmt.Errorf("%w: rules: %w", ErrConfig, err)
	}
	return b, nil
}
