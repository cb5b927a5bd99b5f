package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"xnat/internal/hapair"
)

// FailoverOptions are the flags of e2e --scenario failover.
type FailoverOptions struct {
	Download, Rate, UDPFlows int
	// Dist is the directory holding keepalived.conf and
	// xnat-ha-notify.sh.
	Dist string
}

// FailoverResult is one failover run's line.
type FailoverResult struct {
	Target   string `json:"target"`
	Scenario string `json:"scenario"`
	hapair.Result
}

// findTool finds a binary next to this one, else in PATH.
func findTool(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("the failover scenario needs %s (next to xnat-bench or in PATH): %w", name, err)
	}
	return p, nil
}

// runFailover runs the HA pair's failover (internal/hapair) and writes
// what it cost.
func runFailover(fo FailoverOptions, jsonOut bool, w io.Writer) error {
	xnatd, err := findTool("xnatd")
	if err != nil {
		return err
	}
	xnatctl, err := findTool("xnatctl")
	if err != nil {
		return err
	}
	conf := filepath.Join(fo.Dist, "keepalived.conf")
	notify, err := filepath.Abs(filepath.Join(fo.Dist, "xnat-ha-notify.sh"))
	if err != nil {
		return err
	}
	for _, f := range []string{conf, notify} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("--dist: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "xnat-bench-failover-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	res, err := hapair.Run(hapair.Config{
		Xnatd:   func(args ...string) *exec.Cmd { return exec.Command(xnatd, args...) },
		Xnatctl: xnatctl, KeepalivedConf: conf, Notify: notify,
		Download: fo.Download, Rate: fo.Rate, UDPFlows: fo.UDPFlows, Dir: dir,
	})
	if err != nil {
		return err
	}
	r := FailoverResult{Target: "xnat", Scenario: "failover", Result: res}
	if jsonOut {
		return WriteJSON(w, r)
	}
	if err := Table(w, []string{"established_lost", "resets", "recover_ms", "synced_conns", "sync_lag_ms", "sync_msgs_per_sec", "committed", "download_ok"},
		[][]string{{strconv.Itoa(res.EstablishedLost), strconv.Itoa(res.Resets), fmt.Sprintf("%.0f", res.RecoverMS), strconv.Itoa(res.SyncedConns),
			fmt.Sprintf("%.1f", res.SyncLagMS), fmt.Sprintf("%.0f", res.SyncMsgsPerSec), strconv.Itoa(res.Committed + res.CommitExisting), strconv.FormatBool(res.DownloadOK)}}); err != nil {
		return err
	}
	if len(res.Problems) > 0 {
		_, err := fmt.Fprintf(w, "problems:\n%s\n", strings.Join(res.Problems, "\n"))
		return err
	}
	return nil
}

// validFailover checks the failover flags.
func validFailover(fo *FailoverOptions) error {
	if fo.Download < 1<<20 || fo.Rate <= 0 || fo.UDPFlows < 1 || fo.UDPFlows > 10000 {
		return errors.New("--download (at least 1 MiB), --rate and --udp-flows (1 to 10000) must be positive")
	}
	return nil
}
