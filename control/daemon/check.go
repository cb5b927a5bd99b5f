package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"xnat/control/iptables"
	"xnat/dataplane"
	"xnat/dataplane/kernel"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/dataplane/xdpprog"
)

// Event is something the daemon reports: a start-up fact, a change in the
// kernel's view, a rule-set reload, a LOG record, an error it recovered
// from. The daemon never logs; xnatd hands events to log/slog
// (Logger.Log(ctx, e.Level, e.Msg, e.Args...)).
type Event struct {
	Level slog.Level
	Msg   string
	Args  []any // key-value pairs, as slog takes them
}

func info(msg string, args ...any) Event { return Event{Level: slog.LevelInfo, Msg: msg, Args: args} }
func warn(msg string, args ...any) Event { return Event{Level: slog.LevelWarn, Msg: msg, Args: args} }

// Plan is a validated configuration with what Prepare learnt from the
// system: the kernel's interfaces, the compiled-and-checked rule set, the
// queue counts, the NAT pools' port ranges, and the facts to report.
type Plan struct {
	Config   Config // with defaults
	Snapshot *topo.Snapshot
	Model    *rules.Model
	// Channels is each interface's queue count (ethtool channels, or the
	// number of RX queues when the driver has no channel count).
	Channels map[string]int
	// PoolPorts are the port ranges of the rule set's NAT pools on the
	// box's own addresses.
	PoolPorts []kernel.PortRange
	// LocalPorts is the kernel's ephemeral port choice.
	LocalPorts kernel.LocalPorts
	// FrameSize is the AF_XDP frame size the interfaces' MTUs need.
	FrameSize uint32
	// Facts are the start-up facts, in order.
	Facts []Event
}

// ParseRules parses a rules file into the whole rule set: it is restored
// onto an empty model, so the tables it does not mention are empty with
// policy ACCEPT (unlike iptables-restore onto running rules, which leaves
// such tables as they are; xnatctl iptables-restore does that).
func ParseRules(text []byte) (*rules.Model, error) {
	m, _, err := iptables.Restore(bytes.NewReader(text), rules.NewModel(), iptables.RestoreOptions{})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Prepare validates cfg against the system before anything is attached:
// the config itself, the rules file (parsed and compiled for the
// interfaces), the interfaces (present, enough queues), the CPUs (present
// and allowed), the control socket's directory, and the NAT pools against
// the kernel's ephemeral ports. It must run on a thread in the network
// namespace of the interfaces. Every error wraps ErrConfig.
func Prepare(cfg Config) (*Plan, error) {
	c := cfg.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{Config: c, Channels: map[string]int{}}
	text, err := c.readRules()
	if err != nil {
		return nil, err
	}
	if p.Model, err = ParseRules(text); err != nil {
		return nil, fmt.Errorf("%w: rules %s: %w", ErrConfig, c.Rules, err)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	if p.Snapshot, err = kernel.Dump(h); err != nil {
		return nil, fmt.Errorf("reading the kernel's interfaces: %w", err)
	}
	for i, name := range c.Interfaces() {
		role := "inside"
		if i >= len(c.Inside) {
			role = "outside"
		}
		ifc, ok := p.Snapshot.IfaceByName(name)
		if !ok {
			return nil, fmt.Errorf("%w: %s interface %s does not exist", ErrConfig, role, name)
		}
		n, src, err := queueCount(h, name)
		if err != nil {
			return nil, fmt.Errorf("%w: interface %s: %w", ErrConfig, name, err)
		}
		if c.Queues > n {
			return nil, fmt.Errorf("%w: interface %s has %d queues (%s), %d configured", ErrConfig, name, n, src, c.Queues)
		}
		if n > c.Queues {
			return nil, fmt.Errorf("%w: interface %s has %d receive queues (%s) and xnatd would run %d workers: the queues without one would get no service (their packets are dropped); start xnatd with --queues %d (queues = %d), or lower the interface's queues to %d with ethtool -L %s combined %d (or rx %d)",
				ErrConfig, name, n, src, c.Queues, n, n, c.Queues, name, c.Queues, c.Queues)
		}
		if a, ok, err := xdpprog.Query(ifc.Index); err != nil {
			return nil, fmt.Errorf("%w: interface %s: %w", ErrConfig, name, err)
		} else if ok && a.Name != xdpprog.ProgramName && !c.ReplaceXDP {
			prog := a.Name
			if prog == "" {
				prog = "unnamed"
			}
			return nil, fmt.Errorf("%w: interface %s runs XDP program %d (%s) of another program: xnatd does not replace it unless started with --replace-xdp (replace_xdp = true)", ErrConfig, name, a.ID, prog)
		}
		fs, err := frameSizeFor(ifc.MTU)
		if err != nil {
			return nil, fmt.Errorf("%w: interface %s: %w", ErrConfig, name, err)
		}
		p.FrameSize = max(p.FrameSize, fs)
		if fwd, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + name + "/forwarding"); err == nil && strings.TrimSpace(string(fwd)) == "1" {
			p.Facts = append(p.Facts, warn("the kernel forwards IPv4 on an xnat interface: what xnat does not take is routed by the kernel untranslated, and while xnatd is stopped everything is; set it to 0",
				"interface", name, "sysctl", "net.ipv4.conf."+name+".forwarding", "value", 1))
		}
		p.Channels[name] = n
		addrs := make([]string, len(ifc.Addrs))
		for j, a := range ifc.Addrs {
			addrs[j] = a.String()
		}
		p.Facts = append(p.Facts, info("interface", "name", name, "role", role, "ifindex", ifc.Index,
			"up", ifc.Up, "mtu", ifc.MTU, "queues", n, "addresses", strings.Join(addrs, ",")))
	}
	if len(c.CPUs) > 0 {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			return nil, fmt.Errorf("reading the allowed CPUs: %w", err)
		}
		for _, cpu := range c.CPUs {
			if !set.IsSet(cpu) {
				return nil, fmt.Errorf("%w: CPU %d does not exist or is not allowed (%d CPUs allowed)", ErrConfig, cpu, set.Count())
			}
		}
	}
	if c.Socket != "" {
		if st, err := os.Stat(filepath.Dir(c.Socket)); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%w: socket %s: directory %s does not exist", ErrConfig, c.Socket, filepath.Dir(c.Socket))
		}
	}
	_, err = dataplane.NewEnv(dataplane.EnvConfig{Snapshot: p.Snapshot, Inside: c.Inside, Outside: c.Outside,
		Model: p.Model, Pools: dataplane.NewPools(c.Queues, nil)})
	if err != nil {
		return nil, fmt.Errorf("%w: rules %s: %w", ErrConfig, c.Rules, err)
	}
	for _, w := range rules.Warnings(p.Model) {
		p.Facts = append(p.Facts, warn("rules", "warning", w))
	}
	if p.LocalPorts, err = kernel.ReadLocalPorts(); err != nil {
		return nil, fmt.Errorf("reading the kernel's local port range: %w", err)
	}
	p.PoolPorts = localPoolPorts(p.Model, localAddrs(p.Snapshot))
	facts, err := checkLocalPorts(p.PoolPorts, p.LocalPorts, c.LocalPorts, c.Queues, c.HA.Enabled())
	if err != nil {
		return nil, err
	}
	p.Facts = append(p.Facts, facts...)
	return p, nil
}

// queueCount returns how many queues an interface has: the ethtool channel
// count (combined plus RX-only channels), or, for drivers without one, the
// real number of RX queues netlink reports.
func queueCount(h *netlink.Handle, name string) (int, string, error) {
	ch, err := ethtoolChannels(name)
	if err == nil && ch.combined+ch.rx > 0 {
		return int(ch.combined + ch.rx), "ethtool channels", nil
	}
	l, lerr := h.LinkByName(name)
	if lerr != nil {
		return 0, "", errors.Join(err, lerr)
	}
	if n := l.Attrs().NumRxQueues; n > 0 {
		return n, "RX queues", nil
	}
	return 1, "single queue", nil
}

// ethtoolChannelsCmd is ETHTOOL_GCHANNELS; siocEthtool is SIOCETHTOOL.
const (
	ethtoolChannelsCmd = 0x3c
	siocEthtool        = 0x8946
)

// channels is struct ethtool_channels.
type channels struct {
	cmd                                 uint32
	maxRx, maxTx, maxOther, maxCombined uint32
	rx, tx, other, combined             uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

func ethtoolChannels(name string) (*channels, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("interface name %q too long", name)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	ch := &channels{cmd: ethtoolChannelsCmd}
	var ifr ifreqData
	copy(ifr.name[:], name)
	ifr.data = uintptr(unsafe.Pointer(ch))
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), siocEthtool, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(ch)
	if errno != 0 {
		return nil, fmt.Errorf("ethtool channels of %s: %w", name, errno)
	}
	return ch, nil
}
