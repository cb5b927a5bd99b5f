// Command xnatd is xnat's daemon: it forwards, tracks and translates IPv4
// between inside and outside interfaces on AF_XDP, with iptables rules.
//
//	xnatd [--config FILE] [--inside IF]... [--outside IF]... [--rules FILE]
//	      [--queues N] [--cpus LIST] [--max-conns N] [--capacity N]
//	      [--socket PATH] [--poll sleep|busy] [--bind auto|copy|zerocopy]
//	      [--xdp-mode auto|native|generic] [--local-ports warn|refuse]
//	      [--replace-xdp] [--check-config] [--log-level debug|info|warn|error]
//	      [--takeover] [--pin-dir DIR]
//
// It starts from a TOML config file (see package control/daemon), from
// flags alone, or both, flags overriding the file (a repeated flag such as
// --inside replaces the file's list). It validates everything before it
// touches an interface: a bad configuration is one line on stderr and exit
// status 2 — among them an xnat interface with more receive queues than
// workers, an MTU larger than xnat's frames hold, and an XDP program of
// another program on an xnat interface (--replace-xdp replaces it).
// --check-config validates and exits 0. It logs with log/slog
// (text, on stderr), one line per start-up fact. SIGHUP reloads the rules
// file (parsed and compiled first; on error the rules in force stay);
// SIGINT and SIGTERM stop it cleanly (workers stopped, XDP programs
// detached, sockets closed) with exit status 0.
//
// With --takeover it takes over from the xnatd running with the same
// config (through the hand-over socket, the control socket's path with
// ".takeover"), or from the hand-over file a stopped one left (".handover"):
// every connection keeps its translation and external port, and the
// interfaces keep an xnat program throughout; the takeover's log line
// gives the gap (gap_ms). Started so, SIGTERM writes the hand-over file
// and pins the XDP links under --pin-dir for the next xnatd (systemctl
// restart); SIGINT stops without it. A running xnatd hands over to any
// xnatd --takeover that asks with the same interfaces and rules, and
// exits 0. See docs/ha.md.
//
// It serves the control API (package control/api, for xnatctl) on a unix
// socket, /run/xnat/xnat.sock unless --socket or the config's socket says
// otherwise, mode 0600, and Prometheus metrics when the config's metrics
// key gives an address; the API's events (table full with its drop count,
// out of ports, rules replaced, address changes) are logged too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"xnat/control/api"
	"xnat/control/daemon"
	"xnat/internal/cpuset"
)

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("xnatd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		inside, outside                        list
		configFile, rulesFile, cpus, socket    string
		poll, bind, xdpMode, localPorts, level string
		queues, maxConns, capacity             int
		checkOnly, replaceXDP, takeover        bool
		pinDir                                 string
	)
	fs.StringVar(&configFile, "config", "", "TOML config file")
	fs.Var(&inside, "inside", "inside interface (repeat for more)")
	fs.Var(&outside, "outside", "outside interface (repeat for more)")
	fs.StringVar(&rulesFile, "rules", "", "iptables-save rules file")
	fs.IntVar(&queues, "queues", 0, "queues per interface, one worker each (default 1)")
	fs.StringVar(&cpus, "cpus", "", "CPUs to pin the workers to, one per queue: 0,1 or 2-3")
	fs.IntVar(&maxConns, "max-conns", 0, "connection limit, nf_conntrack_max (default: the capacity)")
	fs.IntVar(&capacity, "capacity", 0, "flow table capacity (default 262144)")
	fs.StringVar(&socket, "socket", "", "control socket path")
	fs.StringVar(&poll, "poll", "", "idle workers: sleep (default) or busy")
	fs.StringVar(&bind, "bind", "", "AF_XDP bind: auto (default), copy or zerocopy")
	fs.StringVar(&xdpMode, "xdp-mode", "", "XDP attach: auto (default), native or generic")
	fs.StringVar(&localPorts, "local-ports", "", "NAT pool overlapping ip_local_port_range: warn (default) or refuse")
	fs.BoolVar(&replaceXDP, "replace-xdp", false, "replace an XDP program another program left on an xnat interface")
	fs.BoolVar(&checkOnly, "check-config", false, "validate the configuration against the system and exit")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&takeover, "takeover", false, "take over from the xnatd running with this config, or from the hand-over file a stopped one left; hand over on SIGTERM")
	fs.StringVar(&pinDir, "pin-dir", defaultPinDir, "bpffs directory where a hand-over on SIGTERM pins the XDP links")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "xnatd: %v\n", err)
		return code
	}
	if fs.NArg() > 0 {
		return fail(2, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fail(2, fmt.Errorf("--log-level %q: %w", level, err))
	}
	var cfg daemon.Config
	if configFile != "" {
		var err error
		if cfg, err = daemon.LoadFile(configFile); err != nil {
			return fail(2, err)
		}
	}
	var flagErr error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "inside":
			cfg.Inside = inside
		case "outside":
			cfg.Outside = outside
		case "rules":
			cfg.Rules = rulesFile
		case "queues":
			cfg.Queues = queues
		case "cpus":
			c, err := cpuset.Parse(cpus)
			if err != nil {
				flagErr = fmt.Errorf("--cpus: %w", err)
			}
			cfg.CPUs = c
		case "max-conns":
			cfg.MaxConns = maxConns
		case "capacity":
			cfg.Capacity = capacity
		case "socket":
			cfg.Socket = socket
		case "poll":
			cfg.Poll = poll
		case "bind":
			cfg.Bind = bind
		case "xdp-mode":
			cfg.XDPMode = xdpMode
		case "local-ports":
			cfg.LocalPorts = localPorts
		case "replace-xdp":
			cfg.ReplaceXDP = replaceXDP
		}
	})
	if flagErr != nil {
		return fail(2, flagErr)
	}
	plan, err := daemon.Prepare(cfg)
	if err != nil {
		return fail(2, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	ctx := context.Background()
	if checkOnly {
		for _, f := range plan.Facts {
			log.Log(ctx, f.Level, f.Msg, f.Args...)
		}
		log.Info("configuration ok")
		return 0
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	sock := plan.Config.Socket
	if sock == "" {
		sock = api.DefaultSocket
	}
	var to *takeOver
	opts := daemon.Options{OnEvent: func(e daemon.Event) {
		// The control API reports the table-full condition with its drop
		// count (KindTableFull below); the daemon's bare event would
		// repeat it.
		if strings.Contains(e.Msg, "table full") {
			return
		}
		log.Log(ctx, e.Level, e.Msg, e.Args...)
	}}
	if takeover {
		if to, err = prepareTakeOver(log, &plan.Config, sock, pinDir); err != nil {
			return fail(1, err)
		}
		opts.TakeOver = to.receive
	}
	d, err := daemon.Start(plan, opts)
	beside := to != nil && to.client != nil
	if beside && err != nil {
		// The old xnatd stops when the connection closes.
		to.client.Close()
	}
	if err != nil {
		if errors.Is(err, daemon.ErrConfig) {
			return fail(2, err)
		}
		return fail(1, err)
	}
	if r, ok := d.TakeOver(); ok {
		log.Info("takeover", "from_pid", r.From, "conns", r.Conns, "committed", r.Commit.Committed,
			"exists", r.Commit.Exists, "no_pool", r.Commit.NoPool, "refused", r.Commit.Refused,
			"bad", r.Bad, "expired", r.Expired, "xdp_links_adopted", r.Adopted,
			"gap_ms", ms(r.Gap), "received_ms", ms(r.Received), "workers_ms", ms(r.Started), "committed_ms", ms(r.Committed))
	}
	// Taking over from a running xnatd, the control socket replaces the
	// old one's, which answered until then (keepalived's check never
	// finds the box without an xnatd); the old one stops next.
	srv, err := serveAPI(d, log, plan.Config, beside)
	if err == nil {
		to.done(log)
	}
	if beside {
		if serr := to.client.Serving(); serr != nil {
			log.Warn("takeover: telling the old xnatd", "err", serr)
		}
		if werr := to.client.Wait(10 * time.Second); werr != nil {
			log.Warn("takeover: the old xnatd did not end within 10s", "err", werr)
		}
		to.client.Close()
	}
	if err != nil {
		if serr := d.Stop(); serr != nil {
			log.Error("stopping", "err", serr)
		}
		return fail(1, err)
	}
	handovers, hln, err := listenHandOver(daemon.HandOverSocket(sock))
	if err != nil {
		log.Warn("hand-over socket: xnatd --takeover cannot take over from this process", "err", err)
	} else {
		defer hln.Close()
		log.Info("hand-over socket", "path", daemon.HandOverSocket(sock))
	}
	log.Info("running", "pid", os.Getpid())
	stop := func() int {
		if err := srv.Close(); err != nil {
			log.Error("closing the control API", "err", err)
		}
		s := d.Stats()
		if err := d.Stop(); err != nil {
			log.Error("stopping", "err", err)
			return 1
		}
		log.Info("stopped", "forwarded", s.Pipeline.Forwarded, "connections_created", s.Pipeline.Created)
		return 0
	}
	for {
		select {
		case c := <-handovers:
			fp, err := daemon.Fingerprint(&plan.Config)
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if err == nil {
				err = daemon.CheckTakeOverRequest(c, fp)
			}
			if err != nil {
				log.Warn("takeover refused", "err", err)
				daemon.RefuseTakeOver(c, err)
				c.Close()
				continue
			}
			h, err := d.HandOverTo(c, fp)
			if err != nil {
				log.Error("hand-over", "err", err)
			}
			log.Info("handed over", "conns", h.Conns, "xdp_links", strings.Join(h.Links, ","))
			if hln != nil {
				hln.Close()
			}
			// The control socket answers until the new xnatd's
			// replaces it: it closes its side of the connection then
			// (or when it fails).
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.Copy(io.Discard, c)
			code := stop()
			// Closing the connection tells the new xnatd this one is gone.
			c.Close()
			return code
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if err := srv.ReloadRules(); err != nil {
					log.Error("rules not reloaded; the rules in force stay", "err", err)
				}
				continue
			}
			log.Info("stopping", "signal", sig.String())
			if takeover && sig == syscall.SIGTERM {
				handOverFile(log, d, &plan.Config, sock, pinDir)
			}
			return stop()
		}
	}
}

// ms formats a duration in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// serveAPI serves the control API on the configured socket (default
// /run/xnat/xnat.sock) and, when configured, the Prometheus endpoint; the
// API's events are logged.
func serveAPI(d *daemon.Daemon, log *slog.Logger, cfg daemon.Config, replace bool) (*api.Server, error) {
	ctx := context.Background()
	srv := api.New(d, api.Options{OnEvent: func(e api.Event) {
		lvl := slog.LevelInfo
		_ = lvl.UnmarshalText([]byte(e.Level))
		args := []any{"kind", e.Kind}
		if e.Kind == api.KindTableFull || e.Kind == api.KindTableNotFull || e.Kind == api.KindOutOfPorts {
			args = append(args, "drops", e.Drops)
		}
		if e.Conns != 0 || e.Max != 0 {
			args = append(args, "conns", e.Conns, "max", e.Max)
		}
		if e.Duration != "" {
			args = append(args, "duration", e.Duration)
		}
		if e.Interface != "" {
			args = append(args, "interface", e.Interface, "addrs", strings.Join(e.Addrs, ","))
		}
		if e.Count != 0 {
			args = append(args, "count", e.Count)
		}
		if e.Source != "" {
			args = append(args, "source", e.Source)
		}
		log.Log(ctx, lvl, e.Msg, args...)
	}})
	sock := cfg.Socket
	if sock == "" {
		sock = api.DefaultSocket
	}
	listen := srv.Listen
	if replace {
		listen = srv.ListenReplacing
	}
	if err := listen(sock); err != nil {
		srv.Close()
		return nil, err
	}
	log.Info("control socket", "path", sock)
	if cfg.Metrics != "" {
		addr, err := srv.ServeMetrics(cfg.Metrics)
		if err != nil {
			srv.Close()
			return nil, err
		}
		log.Info("metrics", "url", "http://"+addr.String()+"/metrics")
	}
	return srv, nil
}
