// Package conntrackd runs a real conntrackd (Debian's conntrack-tools;
// scripts/deps.sh installs it) in a network namespace, with a FTFW sync
// link towards xnat, for the interoperability tests of control/ha and
// cmd/xnatctl.
package conntrackd

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xnat/internal/netns"
)

// Port is the sync link's UDP port in the tests.
const Port = 3780

// RequireTools fails the test when conntrackd, conntrack, iptables or ip
// is missing.
func RequireTools(t testing.TB) {
	t.Helper()
	for _, c := range []string{"conntrackd", "conntrack", "iptables", "ip"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not found (run scripts/deps.sh as root): %v", c, err)
		}
	}
}

// Daemon is a conntrackd process in a namespace.
type Daemon struct {
	NS   *netns.NS
	Conf string // its configuration file
	Log  string // its log file
}

// UDP is the Sync section's unicast transport from local to peer through
// dev, on Port. (conntrackd's configuration lexer takes a name that reads
// as hexadecimal, such as a0, for a number and refuses it: give such an
// interface an alternative name.)
func UDP(local, peer, dev string) string {
	return fmt.Sprintf(`UDP {
		IPv4_address %s
		IPv4_Destination_Address %s
		Port %d
		Interface %s
		Checksum on
	}`, local, peer, Port, dev)
}

// Start writes a FTFW configuration with the given transport section
// (UDP, or a Multicast section) and starts conntrackd in ns in the
// foreground; the test's cleanup stops it, and prints its log if the test
// failed. Start returns once conntrackd has subscribed to the kernel's
// events.
func Start(t testing.TB, ns *netns.NS, local, peer, transport string) *Daemon {
	t.Helper()
	dir := t.TempDir()
	d := &Daemon{NS: ns, Conf: filepath.Join(dir, "conntrackd.conf"), Log: filepath.Join(dir, "conntrackd.log")}
	conf := fmt.Sprintf(`Sync {
	Mode FTFW {
		ResendQueueSize 131072
		ACKWindowSize 20
	}
	%s
}
General {
	HashSize 8192
	HashLimit 65536
	LogFile %s
	Syslog off
	LockFile %s
	UNIX { Path %s }
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {
		Address Ignore {
			IPv4_address 127.0.0.1
			IPv4_address %s
			IPv4_address %s
		}
	}
}
`, transport, d.Log, filepath.Join(dir, "lock"), filepath.Join(dir, "ctl"), local, peer)
	if err := os.WriteFile(d.Conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	var out bytes.Buffer // before its log file is open, it writes here
	if err := ns.Do(func() error {
		cmd = exec.Command("conntrackd", "-C", d.Conf)
		cmd.Stdout, cmd.Stderr = &out, &out
		return cmd.Start()
	}); err != nil {
		t.Fatalf("start conntrackd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			if b, err := os.ReadFile(d.Log); err == nil {
				t.Logf("conntrackd log:\n%s", b)
			}
		}
	})
	// Ready is the log's "initialization completed", written once the
	// kernel's events are subscribed to. The control socket comes
	// earlier: a connection made between the two is in conntrackd's
	// startup dump, which it keeps without sending, and never in an
	// event (a loaded machine hit that window).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(d.Log); err == nil && strings.Contains(string(b), "initialization completed") {
			if _, err := os.Stat(filepath.Join(dir, "ctl")); err == nil {
				return d
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(d.Log)
			t.Fatalf("conntrackd exited: %s%s", b, out.Bytes())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("conntrackd did not complete its initialization")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Ctl runs conntrackd's client against the daemon (conntrackd -C conf
// args) and returns its output.
func (d *Daemon) Ctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.NS.Run("conntrackd", append([]string{"-C", d.Conf}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
