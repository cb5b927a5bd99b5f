package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"xnat/internal/hapair"
	"xnat/internal/netns"
)

// testRestart runs a restart (internal/hapair) with this binary as
// xnatd and the HA issue's load, as TestFailover: a 100 MB download paced
// at 25 MB/s (the restart lands a fifth in), an echo session and 1,000
// UDP flows with replies through one xnatd, replaced mid-download. Expected: the download
// completes with its checksum, the echo session keeps echoing, no reset
// at either end, nothing reaches the server untranslated, every UDP flow
// keeps its external port, and the new xnatd adopted both interfaces' XDP
// links and committed every connection.
func testRestart(t *testing.T, mode string) {
	netns.RequireRoot(t)
	exe, err := os.Executable()
	must(t, err)
	res, err := hapair.Restart(hapair.RestartConfig{
		Xnatd: func(args ...string) *exec.Cmd {
			cmd := exec.Command(exe, args...)
			cmd.Env = append(os.Environ(), "XNATD_TEST_MAIN=1")
			return cmd
		},
		Mode: mode, CheckTimeout: raceSlowdown * time.Second, Download: 100 << 20, Rate: 25 << 20, UDPFlows: 1000, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if len(res.Problems) > 0 {
		t.Fatalf("restart problems:\n%s", strings.Join(res.Problems, "\n"))
	}
	if res.EstablishedLost != 0 || res.Resets != 0 || res.Leaked != 0 || !res.DownloadOK || res.EchoesAfter < 10 {
		t.Fatalf("lost %d, resets %d, leaked %d, download ok %v, %d echoes after", res.EstablishedLost, res.Resets, res.Leaked, res.DownloadOK, res.EchoesAfter)
	}
	// The flows, the echo session, the download and the probe.
	if want := 1000 + 3; res.HandedOver < want || res.Committed < want {
		t.Fatalf("handed over %d, committed %d, want at least %d", res.HandedOver, res.Committed, want)
	}
	// keepalived's check would have seen xnatd answer throughout.
	if res.Checks < 5 || res.CheckFailures != 0 {
		t.Fatalf("%d of %d control-socket checks failed through the restart", res.CheckFailures, res.Checks)
	}
	if res.Adopted != 2 {
		t.Fatalf("%d XDP links adopted, want 2", res.Adopted)
	}
	t.Logf("gap %.1f ms (xnatd), longest probe outage %.1f ms", res.GapMS, res.OutageMS)
}

// TestTakeover: xnatd --takeover started beside the running xnatd takes
// its table and XDP links over the hand-over socket.
func TestTakeover(t *testing.T) { testRestart(t, hapair.RestartBeside) }

// TestTakeoverRestart: the running xnatd gets SIGTERM (it writes the
// hand-over file and pins its XDP links), then xnatd --takeover starts,
// as systemctl restart does with dist/xnatd.service.
func TestTakeoverRestart(t *testing.T) { testRestart(t, hapair.RestartFile) }
