package netns

import (
	"os"
	"strings"
	"testing"
)

// TestSysfs steers a veth end's receive processing (RPS) inside a
// namespace and reads it back; the host's sysfs must not show the
// namespace's device, and no mount may leak to the process.
func TestSysfs(t *testing.T) {
	tp := New(t)
	a, b := tp.NS("a"), tp.NS("b")
	tp.Veth(a, "va", b, "vb")
	must(t, a.WriteSysfs("va/queues/rx-0/rps_cpus", "1"))
	got, err := a.ReadSysfs("va/queues/rx-0/rps_cpus")
	must(t, err)
	if strings.Trim(strings.TrimSpace(got), "0,") != "1" {
		t.Fatalf("rps_cpus = %q after writing 1", got)
	}
	if got, err := b.ReadSysfs("vb/queues/rx-0/rps_cpus"); err != nil || strings.Trim(strings.TrimSpace(got), "0,") != "" {
		t.Fatalf("the peer's rps_cpus = %q, %v: want it untouched", got, err)
	}
	if _, err := a.ReadSysfs("vb/queues/rx-0/rps_cpus"); err == nil {
		t.Fatalf("namespace a sees b's device in its sysfs")
	}
	if _, err := os.Stat("/sys/class/net/va"); err == nil {
		t.Fatalf("the host's sysfs shows the namespace's device")
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	if strings.Contains(string(mounts), "xnat-sysfs-") {
		t.Fatalf("a sysfs mount leaked into the process:\n%s", mounts)
	}
	if err := a.WriteSysfs("../../../etc/passwd", "x"); err == nil {
		t.Fatalf("a path outside /sys/class/net was accepted")
	}
}
