package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xnat/internal/hapair"
	"xnat/internal/netns"
)

// runFailover runs an HA pair's failover (internal/hapair) with this
// binary as xnatd and checks what the issue expects of it: the download
// completes with its checksum, the echo session keeps echoing, no reset
// at either end, every UDP flow keeps its external port, traffic flows
// again within 2 s, and the backup committed every connection (want of
// them).
func runFailover(t *testing.T, cfg hapair.Config, want int) hapair.Result {
	netns.RequireRoot(t)
	dir := t.TempDir()
	xnatctl := filepath.Join(dir, "xnatctl")
	if out, err := exec.Command("go", "build", "-o", xnatctl, "xnat/cmd/xnatctl").CombinedOutput(); err != nil {
		t.Fatalf("building xnatctl: %v\n%s", err, out)
	}
	exe, err := os.Executable()
	must(t, err)
	notify, err := filepath.Abs("../../dist/xnat-ha-notify.sh")
	must(t, err)
	cfg.Xnatd = func(args ...string) *exec.Cmd {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "XNATD_TEST_MAIN=1")
		return cmd
	}
	cfg.Xnatctl, cfg.KeepalivedConf, cfg.Notify, cfg.Dir = xnatctl, "../../dist/keepalived.conf", notify, dir
	res, err := hapair.Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Upgrade != nil {
		t.Logf("upgrade: %+v", *res.Upgrade)
	}
	if len(res.Problems) > 0 {
		t.Fatalf("failover problems:\n%s", strings.Join(res.Problems, "\n"))
	}
	if res.EstablishedLost != 0 || res.Resets != 0 || !res.DownloadOK || res.EchoesAfter < 10 {
		t.Fatalf("lost %d, resets %d, download ok %v, %d echoes after the kill", res.EstablishedLost, res.Resets, res.DownloadOK, res.EchoesAfter)
	}
	if rec := time.Duration(res.RecoverMS * float64(time.Millisecond)); rec <= 0 || rec > 2*time.Second {
		t.Fatalf("traffic flowed again %v after the kill, want within 2s", rec)
	}
	if res.SyncedConns < want || res.Committed+res.CommitExisting < want {
		t.Fatalf("synced %d, committed %d (+%d there already), want at least %d", res.SyncedConns, res.Committed, res.CommitExisting, want)
	}
	return res
}

// TestFailover runs an HA pair's failover: two xnatd with
// dist/keepalived.conf and dist/xnat-ha-notify.sh between an inside and
// an outside bridge; a TCP download, a TCP echo session and UDP flows
// through the primary, whose xnatd gets SIGKILL mid-download. The load
// is the HA issue's: a 100 MB download paced at 25 MB/s (so that the
// kill, a fifth in, lands in the middle of it) and 1,000 UDP flows.
func TestFailover(t *testing.T) {
	// The UDP flows, the 20 lag flows, the probe, echo and download.
	runFailover(t, hapair.Config{Download: 100 << 20, Rate: 25 << 20, UDPFlows: 1000}, 1023)
}

// TestFailoverAfterUpgrade: the same pair and load, upgraded before the
// kill: the backup's xnatd, then, mid-download, the primary's are
// replaced by xnatd --takeover started beside them. The download is
// paced at 10 MB/s so that both takeovers and the kill land within it.
// Expected besides TestFailover's checks: the new backup's cache holds
// every connection again, keepalived does not move the addresses, every
// UDP flow keeps its external port through the new primary, and the
// backup receives the new primary's events (its flows survive the
// failover too).
func TestFailoverAfterUpgrade(t *testing.T) {
	res := runFailover(t, hapair.Config{Download: 100 << 20, Rate: 10 << 20, UDPFlows: 1000, Upgrade: true}, 1023+20)
	up := res.Upgrade
	if up == nil {
		t.Fatal("no upgrade result")
	}
	if up.PortsKept != 1000 || up.EventsAfter != 20 || up.Transitions != 0 || up.HandedOver < 1023 || up.Committed < 1023 {
		t.Fatalf("upgrade: %+v", *up)
	}
	t.Logf("takeover gaps: backup %.1f ms, primary %.1f ms; backup's cache refilled in %.0f ms; recovered %.0f ms after the kill",
		up.BackupGapMS, up.PrimaryGapMS, up.RefillMS, res.RecoverMS)
}
