package api_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"xnat/control/daemon"
)

// TestDistConfig: the shipped example config loads with every key known
// and validates; the unit file starts xnatd with it (taking over from the
// xnatd it restarts) and reloads by SIGHUP.
func TestDistConfig(t *testing.T) {
	c, err := daemon.LoadFile("../../dist/xnatd.toml")
	must(t, err)
	c = c.WithDefaults()
	must(t, c.Validate())
	if c.Metrics != "127.0.0.1:9155" || c.MetricsAllowRemote || c.Socket != "/run/xnat/xnat.sock" || len(c.Timeouts) != 3 {
		t.Fatalf("example config read as %+v", c)
	}
	unit, err := os.ReadFile("../../dist/xnatd.service")
	must(t, err)
	for _, want := range []string{
		"ExecStart=/usr/local/sbin/xnatd --config /etc/xnat/xnatd.toml --takeover\n",
		"RuntimeDirectoryPreserve=restart\n",
		"ExecReload=/bin/kill -HUP $MAINPID\n",
		"Type=simple\n", "Restart=on-failure\n", "RuntimeDirectory=xnat\n", "LimitMEMLOCK=infinity\n",
		"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_SYS_ADMIN CAP_IPC_LOCK CAP_SYS_NICE\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// systemd's own check of the unit (its directives, values and
	// sections), with the binary's path pointed at an executable here.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not found (run scripts/deps.sh as root): %v", err)
	}
	exe, err := os.Executable()
	must(t, err)
	copied := filepath.Join(t.TempDir(), "xnatd.service")
	must(t, os.WriteFile(copied, []byte(strings.ReplaceAll(string(unit), "/usr/local/sbin/xnatd", exe)), 0o644))
	out, err := exec.Command(analyze, "verify", copied).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
