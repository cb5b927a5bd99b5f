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

// TestFailover runs an HA pair's failover (internal/hapair): two xnatd
// with dist/keepalived.conf and dist/xnat-ha-notify.sh between an inside
// and an outside bridge; a TCP download, a TCP echo session and UDP flows
// through the primary, whose xnatd gets SIGKILL mid-download. The load is
// the HA issue's: a 100 MB download paced at 25 MB/s (so that the kill,
// a fifth in, lands in the middle of it) and 1,000 UDP flows. Expected: the
// download completes with its checksum, the echo session keeps echoing,
// no reset at either end, every UDP flow keeps its external port, and
// traffic flows again within 2 s.
func TestFailover(t *testing.T) {
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
	res, err := hapair.Run(hapair.Config{
		Xnatd: func(args ...string) *exec.Cmd {
			cmd := exec.Command(exe, args...)
			cmd.Env = append(os.Environ(), "XNATD_TEST_MAIN=1")
			return cmd
		},
		Xnatctl: xnatctl, KeepalivedConf: "../../dist/keepalived.conf", Notify: notify,
		Download: 100 << 20, Rate: 25 << 20, UDPFlows: 1000, Dir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if len(res.Problems) > 0 {
		t.Fatalf("failover problems:\n%s", strings.Join(res.Problems, "\n"))
	}
	if res.EstablishedLost != 0 || res.Resets != 0 || !res.DownloadOK || res.EchoesAfter < 10 {
		t.Fatalf("lost %d, resets %d, download ok %v, %d echoes after the kill", res.EstablishedLost, res.Resets, res.DownloadOK, res.EchoesAfter)
	}
	if rec := time.Duration(res.RecoverMS * float64(time.Millisecond)); rec <= 0 || rec > 2*time.Second {
		t.Fatalf("traffic flowed again %v after the kill, want within 2s", rec)
	}
	// The UDP flows, the 20 lag flows, the probe, echo and download.
	if res.SyncedConns < 1023 || res.Committed+res.CommitExisting < 1023 {
		t.Fatalf("synced %d, committed %d (+%d there already), want at least 1023", res.SyncedConns, res.Committed, res.CommitExisting)
	}
}
