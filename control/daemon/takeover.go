package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"xnat/control/ha"
	"xnat/dataplane"
)

// Hand-over paths, next to the control socket: the running xnatd listens
// on HandOverSocket(sock) for an xnatd --takeover; a stopping xnatd
// started with --takeover leaves HandOverFile(sock) for the next one.
func HandOverSocket(controlSocket string) string { return controlSocket + ".takeover" }

// HandOverFile is the hand-over file next to a control socket.
func HandOverFile(controlSocket string) string { return controlSocket + ".handover" }

// handOff is what the handing-over daemon gives: the header, the
// connections as conntrackd messages, and its XDP links.
type handOff struct {
	header HandOverHeader
	msgs   []byte
	links  []*os.File
}

// handOff stops forwarding for good and gathers the hand-over: the
// workers are stopped (the table is a consistent snapshot from then on),
// the AF_XDP sockets closed (the next xnatd binds its own to the same
// queues), the sync link closed (it binds the same port), and the table
// encoded as a bulk send. The XDP programs stay attached: their links
// are pinned under pinDir, or, with pinDir "", returned as descriptors;
// with nothing to hold them they drop xnat's packets (their sockets are
// gone) and pass the rest to the kernel, so nothing of xnat's leaks to
// the kernel untranslated. After it the daemon only stops.
func (d *Daemon) handOff(fingerprint, pinDir string) (*handOff, error) {
	d.ioMu.Lock()
	defer d.ioMu.Unlock()
	d.mu.Lock()
	if d.stopped || d.handed {
		d.mu.Unlock()
		return nil, ErrStopped
	}
	d.handed = true
	cur := d.io
	d.mu.Unlock()
	var role ha.Role
	var roleSince time.Time
	if d.ha.node != nil {
		role, roleSince = d.ha.node.Role()
	}
	d.stopHA()
	idle := &ioSet{progs: slices.Clone(cur.progs), ifindex: slices.Clone(cur.ifindex), frameSize: cur.frameSize}
	d.installIO(idle, cur)
	stopWorkers(cur)
	stopped := time.Now()
	var errs []error
	if err := d.closeQueues(cur); err != nil {
		errs = append(errs, err)
	}
	h := &handOff{header: HandOverHeader{PID: os.Getpid(), Stopped: stopped.UnixNano(), Fingerprint: fingerprint}}
	if role != ha.RoleUnknown {
		h.header.HARole, h.header.HARoleSince = role.String(), roleSince.UnixNano()
	}
	for i, p := range idle.progs {
		if p == nil {
			continue
		}
		name := d.names[i]
		if pinDir != "" {
			path := filepath.Join(pinDir, name)
			_ = os.Remove(path) // a pin left by a hand-over nobody took
			if err := p.Pin(path); err != nil {
				errs = append(errs, err)
				continue
			}
			if h.header.Pins == nil {
				h.header.Pins = map[string]string{}
			}
			h.header.Pins[name] = path
		} else {
			f, err := p.LinkFile()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			h.links = append(h.links, f)
			h.header.Links = append(h.header.Links, name)
		}
		p.HandedOver()
	}
	s := &handOverSender{}
	ha.SendTable(d.tab, s)
	h.msgs, h.header.Conns = s.buf, s.n
	return h, errors.Join(errs...)
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// CheckTakeOverRequest reads a taking-over xnatd's request from the
// hand-over socket: its protocol version and configuration fingerprint,
// which must be this one's.
func CheckTakeOverRequest(r io.Reader, fingerprint string) error {
	line, err := readLine(bufio.NewReaderSize(io.LimitReader(r, 512), 512))
	if err != nil {
		return err
	}
	rest, ok := strings.CutPrefix(line, handOverRequest+" ")
	if !ok {
		return fmt.Errorf("%w: not a takeover request (%.40q)", ErrHandOver, line)
	}
	if rest != fingerprint {
		return fmt.Errorf("%w: the new xnatd's configuration differs (interfaces or rules: fingerprint %.32q, this one %s)", ErrHandOver, rest, fingerprint)
	}
	return nil
}

// RefuseTakeOver answers a takeover request with a refusal.
func RefuseTakeOver(c net.Conn, reason error) {
	_, _ = fmt.Fprintf(c, "error %s\n", strings.ReplaceAll(reason.Error(), "\n", " "))
}

// HandOverTo hands this daemon over to the xnatd on c (which sent an
// accepted request): it stops forwarding, sends the header with its XDP
// links' descriptors, then every connection. Its programs stay attached
// until the new xnatd switches each link to its own. The daemon must be
// stopped next (Stop); it then leaves the interfaces to the new one.
func (d *Daemon) HandOverTo(c *net.UnixConn, fingerprint string) (HandOverHeader, error) {
	h, err := d.handOff(fingerprint, "")
	if h == nil {
		return HandOverHeader{}, err
	}
	defer closeFiles(h.links)
	head, herr := encodeHandOverHeader(&h.header)
	if herr != nil {
		return h.header, errors.Join(err, herr)
	}
	fds := make([]int, len(h.links))
	for i, f := range h.links {
		fds[i] = int(f.Fd())
	}
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, _, werr := c.WriteMsgUnix(head, oob, nil); werr != nil {
		return h.header, errors.Join(err, fmt.Errorf("%w: sending the header: %w", ErrHandOver, werr))
	}
	if _, werr := c.Write(h.msgs); werr != nil {
		return h.header, errors.Join(err, fmt.Errorf("%w: sending the connections: %w", ErrHandOver, werr))
	}
	return h.header, err
}

// WriteHandOverFile hands this daemon over to the next xnatd through a
// file (a restart, where the old process ends before the new starts): it
// stops forwarding and writes the hand-over to path (atomically:
// written aside, then renamed). The XDP links are pinned under pinDir
// when it is a bpffs directory, so that the interfaces keep an xnat
// program, dropping xnat's packets, until the next xnatd adopts them;
// with pinDir "" they are detached when the daemon stops and the kernel
// sees xnat's packets meanwhile. The daemon must be stopped next.
func (d *Daemon) WriteHandOverFile(path, pinDir, fingerprint string) (HandOverHeader, error) {
	h, err := d.handOff(fingerprint, pinDir)
	if h == nil {
		return HandOverHeader{}, err
	}
	closeFiles(h.links)
	b, eerr := encodeHandOverFile(&h.header, h.msgs)
	if eerr != nil {
		return h.header, errors.Join(err, eerr)
	}
	tmp := path + ".tmp"
	if werr := os.WriteFile(tmp, b, 0o600); werr != nil {
		return h.header, errors.Join(err, fmt.Errorf("%w: %w", ErrHandOver, werr))
	}
	if rerr := os.Rename(tmp, path); rerr != nil {
		os.Remove(tmp)
		return h.header, errors.Join(err, fmt.Errorf("%w: %w", ErrHandOver, rerr))
	}
	return h.header, err
}

// Incoming is a hand-over received by a starting daemon: the live
// connections, and per interface the XDP link to adopt, as a descriptor
// (from a running xnatd) or a bpffs pin (from a hand-over file).
type Incoming struct {
	Load  HandOverLoad
	Links map[string]*os.File
	Pins  map[string]string
}

// Close closes the descriptors not adopted.
func (in *Incoming) Close() {
	for _, f := range in.Links {
		f.Close()
	}
	in.Links = nil
}

// TakeOverClient is an xnatd --takeover's connection to the running
// xnatd's hand-over socket.
type TakeOverClient struct {
	c *net.UnixConn
}

// DialTakeOver connects to the hand-over socket of a running xnatd.
func DialTakeOver(path string) (*TakeOverClient, error) {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandOver, err)
	}
	return &TakeOverClient{c: c.(*net.UnixConn)}, nil
}

// Receive asks for the hand-over and reads it: the running xnatd stops
// forwarding, sends its links and connections, and releases its sockets.
func (t *TakeOverClient) Receive(fingerprint string) (*Incoming, error) {
	_ = t.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := fmt.Fprintf(t.c, "%s %s\n", handOverRequest, fingerprint); err != nil {
		return nil, fmt.Errorf("%w: sending the request: %w", ErrHandOver, err)
	}
	buf := make([]byte, maxHandOverLine)
	oob := make([]byte, syscall.CmsgSpace(4*64))
	n, oobn, _, _, err := t.c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("%w: reading the header: %w", ErrHandOver, noEOF(err))
	}
	in := &Incoming{Links: map[string]*os.File{}}
	var fds []int
	if oobn > 0 {
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for i := range msgs {
				if f, err := syscall.ParseUnixRights(&msgs[i]); err == nil {
					fds = append(fds, f...)
				}
			}
		}
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		syscall.CloseOnExec(fd)
		files[i] = os.NewFile(uintptr(fd), "xnat-xdp-link")
	}
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(buf[:n]), t.c))
	h, err := readHandOverHeader(br)
	if err != nil {
		closeFiles(files)
		return nil, err
	}
	if h.Fingerprint != fingerprint {
		closeFiles(files)
		return nil, fmt.Errorf("%w: the running xnatd's configuration differs", ErrHandOver)
	}
	for i, name := range h.Links {
		if i < len(files) {
			in.Links[name] = files[i]
		}
	}
	if len(files) > len(h.Links) {
		closeFiles(files[len(h.Links):])
	}
	in.Load, err = readHandOverConns(br, &h, 0)
	if err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

// Serving tells the old xnatd that this one serves the control socket
// now (it has replaced the old one's at the same path): the old one
// answers on it until then, stops and closes the connection.
func (t *TakeOverClient) Serving() error { return t.c.CloseWrite() }

// Wait waits until the old xnatd has closed the connection (it has
// stopped), at most timeout.
func (t *TakeOverClient) Wait(timeout time.Duration) error {
	_ = t.c.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, t.c)
	return err
}

// Close closes the connection.
func (t *TakeOverClient) Close() error { return t.c.Close() }

// TakeOverResult is what a takeover did.
type TakeOverResult struct {
	// From is the process handed over from.
	From int
	// Conns are the connections received; Bad and Expired those left
	// out; Commit what committing the others did.
	Conns, Bad, Expired int
	Commit              dataplane.CommitResult
	// Adopted counts the interfaces whose XDP link was taken over
	// without a detach.
	Adopted int
	// Gap is from the old process's workers stopping to this one's
	// forwarding; Received, Started and Committed are its milestones,
	// measured from the same start: the hand-over read, the workers
	// running on their sockets, the connections committed.
	Gap, Received, Started, Committed time.Duration
}

// TakeOver returns what the takeover at start did (ok false without
// one).
func (d *Daemon) TakeOver() (TakeOverResult, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.takeover == nil {
		return TakeOverResult{}, false
	}
	return *d.takeover, true
}

// takeOverIO brings the interfaces up from a hand-over: the programs are
// loaded, the hand-over received (the old process has released its
// sockets then), the sockets opened and the workers started, every
// connection committed with its translation and external port, and only
// then the interfaces switched to this process's programs — the links
// handed over are updated in place, others attached. Called by Start in
// the daemon's namespace.
func (d *Daemon) takeOverIO(io *ioSet, ports []dataplane.Port, receive func() (*Incoming, error), errc chan error) error {
	for i, p := range ports {
		prog, err := d.load(i)
		if err != nil {
			return err
		}
		d.ioReadMu.Lock()
		d.mu.Lock()
		io.progs[i], io.ifindex[i] = prog, p.IfIndex
		d.mu.Unlock()
		d.ioReadMu.Unlock()
	}
	in, err := receive()
	if err != nil {
		return err
	}
	defer in.Close()
	since := func() time.Duration { return time.Since(time.Unix(0, in.Load.Header.Stopped)) }
	res := TakeOverResult{Received: since(), From: in.Load.Header.PID, Conns: in.Load.Header.Conns, Bad: in.Load.Bad, Expired: in.Load.Expired}
	if hr := in.Load.Header.HARole; hr != "" {
		// Recorded on the node startHA makes next.
		if r, err := ha.ParseRole(hr); err == nil {
			d.handedRole, d.handedRoleSince = r, time.Unix(0, in.Load.Header.HARoleSince)
		} else {
			d.emit(warn("takeover: the HA role handed over is not one", "err", err))
		}
	}
	d.ioReadMu.Lock()
	err = d.openQueues(io)
	d.ioReadMu.Unlock()
	if err != nil {
		return err
	}
	d.installIO(io, io)
	d.runWorkers(io, errc)
	res.Started = since()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	res.Commit, err = committer{d}.Commit(ctx, in.Load.Flows)
	cancel()
	res.Committed = since()
	if err != nil {
		return fmt.Errorf("takeover: committing the connections: %w", err)
	}
	mode, _ := d.cfg.attachMode()
	for i, p := range ports {
		name, prog := d.names[i], io.progs[i]
		var err error
		adopted := true
		switch f, pin := in.Links[name], in.Pins[name]; {
		case f != nil:
			delete(in.Links, name)
			fd, derr := syscall.Dup(int(f.Fd()))
			f.Close()
			if derr != nil {
				return fmt.Errorf("takeover: the link of %s: %w", name, derr)
			}
			syscall.CloseOnExec(fd)
			_, err = prog.Adopt(fd, p.IfIndex)
		case pin != "":
			if _, err = prog.AdoptPinned(pin, p.IfIndex); err != nil {
				d.emit(warn("takeover: the pinned XDP link cannot be adopted; attaching afresh", "interface", name, "err", err))
				adopted = false
				_, err = prog.Attach(p.IfIndex, mode, d.cfg.ReplaceXDP)
			}
		default:
			adopted = false
			_, err = prog.Attach(p.IfIndex, mode, d.cfg.ReplaceXDP)
		}
		if err != nil {
			return fmt.Errorf("takeover: XDP on %s: %w", name, err)
		}
		if adopted {
			res.Adopted++
		}
		args := []any{"interface", name, "ifindex", p.IfIndex, "mode", xdpModeName(prog.Mode()), "adopted", adopted}
		d.emit(info("xdp attached", args...))
	}
	res.Gap = since()
	d.mu.Lock()
	d.takeover = &res
	d.mu.Unlock()
	return nil
}
