package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"xnat/control/daemon"
)

// defaultPinDir is where a hand-over on SIGTERM pins the XDP links (a
// directory of the bpffs systemd mounts at /sys/fs/bpf).
const defaultPinDir = "/sys/fs/bpf/xnat"

// takeOver is an xnatd --takeover's source: a running xnatd (client) or
// a hand-over file.
type takeOver struct {
	client  *daemon.TakeOverClient
	receive func() (*daemon.Incoming, error)
	// file is the hand-over file taken, removed once the control socket
	// is served (done): until then a client (keepalived's check) that
	// finds no socket waits for this xnatd (api.RestartWait).
	file string
}

// done removes the hand-over file taken, if any: a hand-over is used
// once.
func (t *takeOver) done(log *slog.Logger) {
	if t == nil || t.file == "" {
		return
	}
	if err := os.Remove(t.file); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("takeover: removing the hand-over file", "file", t.file, "err", err)
	}
	t.file = ""
}

// prepareTakeOver finds what to take over from: the xnatd answering on
// the hand-over socket next to the control socket, else the hand-over
// file a stopped one left there, else nothing (a fresh start, with any
// XDP link pinned by a hand-over nobody took released first).
func prepareTakeOver(log *slog.Logger, cfg *daemon.Config, sock, pinDir string) (*takeOver, error) {
	fp, err := daemon.Fingerprint(cfg)
	if err != nil {
		return nil, err
	}
	hsock := daemon.HandOverSocket(sock)
	if c, err := daemon.DialTakeOver(hsock); err == nil {
		log.Info("takeover: taking over from the running xnatd", "socket", hsock)
		return &takeOver{client: c, receive: func() (*daemon.Incoming, error) { return c.Receive(fp) }}, nil
	}
	file := daemon.HandOverFile(sock)
	f, err := os.Open(file)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("takeover: hand-over file unreadable; starting afresh", "file", file, "err", err)
		} else {
			log.Info("takeover: no running xnatd and no hand-over file; starting afresh", "socket", hsock, "file", file)
		}
		releasePins(log, cfg, pinDir, nil)
		return &takeOver{receive: func() (*daemon.Incoming, error) { return &daemon.Incoming{}, nil }}, nil
	}
	t := &takeOver{}
	t.receive = func() (*daemon.Incoming, error) {
		defer f.Close()
		ld, err := daemon.LoadHandOverFile(f, fp, time.Now())
		if err != nil {
			if rerr := os.Remove(file); rerr != nil {
				log.Warn("takeover: removing the hand-over file", "file", file, "err", rerr)
			}
			log.Warn("takeover: hand-over file refused; starting afresh", "file", file, "err", err,
				"conns_read", len(ld.Flows), "bad", ld.Bad, "expired", ld.Expired)
			releasePins(log, cfg, pinDir, ld.Header.Pins)
			return &daemon.Incoming{}, nil
		}
		log.Info("takeover: from the hand-over file", "file", file, "from_pid", ld.Header.PID,
			"age", time.Since(time.Unix(0, ld.Header.Stopped)).Round(time.Millisecond).String())
		pins := map[string]string{}
		for name, p := range ld.Header.Pins {
			if within(pinDir, p) {
				pins[name] = p
			}
		}
		releasePins(log, cfg, pinDir, nil, keys(pins)...)
		t.file = file
		return &daemon.Incoming{Load: ld, Pins: pins}, nil
	}
	return t, nil
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// within reports whether path is a file directly in dir.
func within(dir, path string) bool {
	return dir != "" && filepath.Dir(filepath.Clean(path)) == filepath.Clean(dir)
}

// releasePins removes the pins of the configured interfaces under pinDir
// (and the listed ones under it), but those of keep: a pinned link holds
// an xnat program on the interface, which a fresh attach cannot replace.
func releasePins(log *slog.Logger, cfg *daemon.Config, pinDir string, listed map[string]string, keep ...string) {
	if pinDir == "" {
		return
	}
	paths := map[string]bool{}
	for _, name := range cfg.Interfaces() {
		paths[filepath.Join(pinDir, name)] = true
	}
	for _, p := range listed {
		if within(pinDir, p) {
			paths[p] = true
		}
	}
	for _, name := range keep {
		delete(paths, filepath.Join(pinDir, name))
	}
	for p := range paths {
		if err := os.Remove(p); err == nil {
			log.Info("takeover: released an XDP link pinned by an earlier xnatd", "pin", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			log.Warn("takeover: releasing a pinned XDP link", "pin", p, "err", err)
		}
	}
}

// listenHandOver listens on the hand-over socket (mode 0600) and passes
// each connection on.
func listenHandOver(path string) (<-chan *net.UnixConn, *net.UnixListener, error) {
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, nil, fmt.Errorf("%s: another xnatd is serving on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, nil, err
		}
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan *net.UnixConn)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	return ch, ln, nil
}

// handOverFile writes the hand-over file for the xnatd started next
// (systemctl restart), pinning the XDP links under pinDir when it is on
// a bpffs.
func handOverFile(log *slog.Logger, d *daemon.Daemon, cfg *daemon.Config, sock, pinDir string) {
	fp, err := daemon.Fingerprint(cfg)
	if err != nil {
		log.Error("hand-over file not written", "err", err)
		return
	}
	pin := pinDir
	if pin != "" {
		if err := usablePinDir(pin); err != nil {
			log.Warn("hand-over: XDP links not pinned; the interfaces pass packets to the kernel until the next xnatd attaches", "pin_dir", pin, "err", err)
			pin = ""
		}
	}
	file := daemon.HandOverFile(sock)
	h, err := d.WriteHandOverFile(file, pin, fp)
	if err != nil {
		log.Error("hand-over file", "file", file, "err", err)
	}
	pins := make([]string, 0, len(h.Pins))
	for _, p := range h.Pins {
		pins = append(pins, p)
	}
	log.Info("handed over to a file", "file", file, "conns", h.Conns, "xdp_pins", strings.Join(pins, ","))
}

// usablePinDir makes dir if its parent is a bpffs and checks that it is
// on one.
func usablePinDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s is not on a bpffs", dir)
	}
	return nil
}
