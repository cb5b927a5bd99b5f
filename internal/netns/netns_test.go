package netns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func exists(name string) bool {
	_, err := os.Stat(filepath.Join(runDir, name))
	return err == nil
}

// TestTopologyTraffic builds a two-namespace topology and sends a UDP
// datagram across the veth between them, checking every helper on the
// way (addresses, sysctls, TX checksum offload, neighbours, routes).
func TestTopologyTraffic(t *testing.T) {
	tp := New(t)
	a, b := tp.NS("a"), tp.NS("b")
	tp.Veth(a, "va", b, "vb")
	must(t, a.AddAddr("va", "10.9.0.1/24"))
	must(t, b.AddAddr("vb", "10.9.0.2/24"))
	must(t, b.AddAddr("lo", "10.9.9.9/32"))
	must(t, a.AddRoute("10.9.9.9/32", "10.9.0.2", "va"))
	must(t, a.SetSysctl("net.ipv4.ip_forward", "0"))
	if v, err := a.Sysctl("net.ipv4.ip_forward"); err != nil || v != "0" {
		t.Fatalf("ip_forward = %q, %v", v, err)
	}
	if v, err := a.Sysctl("net.ipv6.conf.all.disable_ipv6"); err != nil || v != "1" {
		t.Fatalf("disable_ipv6 = %q, %v", v, err)
	}
	must(t, a.SetTxChecksum("va", false))
	if on, err := a.TxChecksum("va"); err != nil || on {
		t.Fatalf("tx checksum after off: %v, %v", on, err)
	}
	macB, err := b.MAC("vb")
	must(t, err)
	must(t, a.AddNeigh("va", "10.9.0.2", macB))

	var conn *net.UDPConn
	must(t, b.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 9, 9, 9), Port: 4000})
		return err
	}))
	defer conn.Close()
	must(t, a.Do(func() error {
		c, err := net.Dial("udp4", "10.9.9.9:4000")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	}))
	buf := make([]byte, 64)
	must(t, conn.SetReadDeadline(time.Now().Add(3*time.Second)))
	n, from, err := conn.ReadFromUDP(buf)
	must(t, err)
	if string(buf[:n]) != "hello" || !from.IP.Equal(net.IPv4(10, 9, 0, 1)) {
		t.Fatalf("got %q from %v", buf[:n], from)
	}
	// A namespace created by a topology has its own links: the root
	// namespace must not see them.
	if _, err := net.InterfaceByName("va"); err == nil {
		t.Fatalf("veth end va visible outside its namespace")
	}
	out, err := a.Run("cat", "/proc/sys/net/ipv4/ip_forward")
	must(t, err)
	if strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("Run in namespace read ip_forward %q", out)
	}
}

const helperEnv = "XNAT_NETNS_FAILING_HELPER"

// TestFailingTestStillTearsDown runs a test that creates namespaces and
// then fails (in a child process, so that its failure is observed rather
// than inherited); every namespace it printed must be gone afterwards.
func TestFailingTestStillTearsDown(t *testing.T) {
	if mode := os.Getenv(helperEnv); mode != "" {
		failWithNamespaces(t, mode)
		return
	}
	RequireRoot(t)
	for _, mode := range []string{"fatal", "panic"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestFailingTestStillTearsDown$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+mode)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("helper should have failed, got err=%v\n%s", err, out)
			}
			var names []string
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if n, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "NS "); ok {
					names = append(names, n)
				}
			}
			if len(names) != 2 {
				t.Fatalf("helper printed %d namespaces, want 2:\n%s", len(names), out)
			}
			for _, n := range names {
				if exists(n) {
					t.Errorf("namespace %s left behind by a failing test", n)
				}
			}
		})
	}
}

// failWithNamespaces is TestFailingTestStillTearsDown in its child
// process: it opens namespaces and fails.
func failWithNamespaces(t *testing.T, mode string) {
	tp := New(t)
	a, b := tp.NS("fa"), tp.NS("fb")
	tp.Veth(a, "x0", b, "x1")
	fmt.Printf("NS %s\nNS %s\n", a.Name, b.Name)
	if !exists(a.Name) || !exists(b.Name) {
		t.Fatalf("namespaces not created")
	}
	if mode == "panic" {
		panic("deliberate panic with namespaces open")
	}
	t.Fatalf("deliberate failure with namespaces open")
}

// TestSweepRemovesStale creates a namespace named as if by a process
// that has exited and checks that Sweep removes it and leaves a live
// process's namespaces alone.
func TestSweepRemovesStale(t *testing.T) {
	RequireRoot(t)
	child := exec.Command("true")
	must(t, child.Run())
	dead := child.Process.Pid
	stale := fmt.Sprintf("%s%d-1-stale", Prefix, dead)
	if _, err := newNamed(stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if exists(stale) {
			_ = (&NS{Name: stale}).close()
		}
	})
	tp := New(t)
	live := tp.NS("live")
	removed, err := Sweep()
	must(t, err)
	found := false
	for _, r := range removed {
		found = found || r == stale
	}
	if !found || exists(stale) {
		t.Fatalf("stale namespace %s not swept (removed %v)", stale, removed)
	}
	if !exists(live.Name) {
		t.Fatalf("Sweep removed a live namespace %s", live.Name)
	}
}

func TestOwnerPid(t *testing.T) {
	for _, c := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"xnt-123-4-a", 123, true},
		{"xnt-x-4-a", 0, false},
		{"xnt-123", 0, false},
		{"other-123-4", 0, false},
		{"xnt-0-1-a", 0, false},
	} {
		pid, ok := ownerPid(c.name)
		if pid != c.pid || ok != c.ok {
			t.Errorf("ownerPid(%q) = %d, %v; want %d, %v", c.name, pid, ok, c.pid, c.ok)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
