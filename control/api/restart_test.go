package api_test

import (
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"xnat/control/api"
	"xnat/control/daemon"
)

// TestClientWaitsForRestart: with no socket but a fresh hand-over file
// (an xnatd --takeover stopping for a restart), the client waits for the
// next xnatd's socket and gets its answer; with the file older than
// api.RestartWait (a systemctl stop), or none, it reports xnatd not
// running at once.
func TestClientWaitsForRestart(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "xnat.sock")
	file := daemon.HandOverFile(sock)
	must(t, os.WriteFile(file, []byte("xnat-handover 1\n"), 0o600))

	const delay = 300 * time.Millisecond
	served := make(chan error, 1)
	go func() {
		time.Sleep(delay)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			served <- err
			return
		}
		t.Cleanup(func() { ln.Close() })
		mux := http.NewServeMux()
		mux.HandleFunc("GET "+api.Version+"/ha/status", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"Role":"primary"}`))
		})
		served <- http.Serve(ln, mux)
	}()
	c := api.NewClient(sock)
	c.SetTimeout(2 * time.Second)
	start := time.Now()
	st, err := c.HAStatus(t.Context())
	if err != nil || st.Role != "primary" {
		t.Fatalf("through a restart: %+v, %v", st, err)
	}
	if waited := time.Since(start); waited < delay {
		t.Fatalf("answered after %v, before the socket existed (%v)", waited, delay)
	}

	// A stale file: no wait.
	gone := filepath.Join(dir, "gone.sock")
	must(t, os.WriteFile(daemon.HandOverFile(gone), nil, 0o600))
	old := time.Now().Add(-api.RestartWait - time.Second)
	must(t, os.Chtimes(daemon.HandOverFile(gone), old, old))
	for _, path := range []string{gone, filepath.Join(dir, "none.sock")} {
		start = time.Now()
		_, err = api.NewClient(path).HAStatus(t.Context())
		if !errors.Is(err, api.ErrNotRunning) || time.Since(start) > time.Second {
			t.Fatalf("%s: %v after %v, want not running at once", path, err, time.Since(start))
		}
	}
}
