// Command demotraffic drives the traffic of `make demo` (scripts/demo.sh)
// so that the demo needs no ping, nc or iperf on the machine:
//
//	demotraffic serve ADDR UDPPORT TCPPORT      UDP and TCP echo servers until killed
//	demotraffic ping DST COUNT                  ICMP echo requests (raw socket: root)
//	demotraffic udp DST:PORT COUNT              datagrams, each waiting for its echo
//	demotraffic tcp DST:PORT BYTES              one connection echoing BYTES bytes
//	demotraffic burst DST:PORT N HOLD           N connections at once, held HOLD (e.g. 10s)
//
// Each prints one line saying what it did and exits non-zero (1) when
// nothing got through, 2 on bad arguments.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"xnat/dataplane/header"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	a := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		need(a, 3)
		err = serve(a[0], atoi(a[1]), atoi(a[2]))
	case "ping":
		need(a, 2)
		err = ping(a[0], atoi(a[1]))
	case "udp":
		need(a, 2)
		err = udp(a[0], atoi(a[1]))
	case "tcp":
		need(a, 2)
		err = tcp(a[0], atoi(a[1]))
	case "burst":
		need(a, 3)
		hold, perr := time.ParseDuration(a[2])
		if perr != nil {
			fmt.Fprintln(os.Stderr, "demotraffic:", perr)
			os.Exit(2)
		}
		err = burst(a[0], atoi(a[1]), hold)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demotraffic:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: demotraffic serve ADDR UDPPORT TCPPORT | ping DST N | udp DST:PORT N | tcp DST:PORT BYTES | burst DST:PORT N HOLD")
	os.Exit(2)
}

func need(a []string, n int) {
	if len(a) != n {
		usage()
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "demotraffic: %q is not a count\n", s)
		os.Exit(2)
	}
	return n
}

func serve(addr string, udpPort, tcpPort int) error {
	ip := net.ParseIP(addr)
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: udpPort})
	if err != nil {
		return err
	}
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: ip, Port: tcpPort})
	if err != nil {
		return err
	}
	fmt.Printf("serving UDP and TCP echo on %s:%d and %s:%d\n", addr, udpPort, addr, tcpPort)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := uc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = uc.WriteToUDP(buf[:n], from)
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

func ping(dst string, count int) error {
	ip := net.ParseIP(dst).To4()
	if ip == nil {
		return fmt.Errorf("%q is not an IPv4 address", dst)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP)
	if err != nil {
		return fmt.Errorf("raw ICMP socket (needs root): %w", err)
	}
	defer syscall.Close(fd)
	tv := syscall.Timeval{Usec: 500000}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	id := uint16(os.Getpid())
	var sa syscall.SockaddrInet4
	copy(sa.Addr[:], ip)
	got := 0
	var total time.Duration
	for seq := 1; seq <= count; seq++ {
		m := make([]byte, 16)
		m[0] = 8
		binary.BigEndian.PutUint16(m[4:], id)
		binary.BigEndian.PutUint16(m[6:], uint16(seq))
		copy(m[8:], "xnatdemo")
		binary.BigEndian.PutUint16(m[2:], header.Checksum(m, 0))
		start := time.Now()
		if err := syscall.Sendto(fd, m, 0, &sa); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for time.Since(start) < 500*time.Millisecond {
			n, _, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				break
			}
			ihl := int(buf[0]&0xf) * 4
			if n >= ihl+8 && buf[ihl] == 0 && binary.BigEndian.Uint16(buf[ihl+4:]) == id && binary.BigEndian.Uint16(buf[ihl+6:]) == uint16(seq) {
				got++
				total += time.Since(start)
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	avg := time.Duration(0)
	if got > 0 {
		avg = total / time.Duration(got)
	}
	fmt.Printf("ping %s: %d/%d echo replies, average %v\n", dst, got, count, avg.Round(time.Microsecond))
	if got == 0 {
		return errors.New("no echo reply")
	}
	return nil
}

func udp(dst string, count int) error {
	c, err := net.DialTimeout("udp4", dst, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	got := 0
	buf := make([]byte, 2048)
	for i := range count {
		msg := []byte(fmt.Sprintf("datagram %d", i))
		for range 3 {
			if _, err := c.Write(msg); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := c.Read(buf)
			if err == nil && bytes.Equal(buf[:n], msg) {
				got++
				break
			}
		}
	}
	fmt.Printf("udp %s from %s: %d/%d datagrams echoed\n", dst, c.LocalAddr(), got, count)
	if got == 0 {
		return errors.New("no datagram echoed")
	}
	return nil
}

func tcp(dst string, size int) error {
	c, err := net.DialTimeout("tcp4", dst, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	data := bytes.Repeat([]byte("xnat"), size/4+1)[:size]
	start := time.Now()
	errc := make(chan error, 1)
	go func() { _, err := c.Write(data); errc <- err }()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return errors.New("echo differs")
	}
	fmt.Printf("tcp %s from %s: %d bytes echoed in %v\n", dst, c.LocalAddr(), size, time.Since(start).Round(time.Millisecond))
	return nil
}

// burst opens n connections at once, each echoing a few bytes, holds the
// ones that worked for hold, and reports.
func burst(dst string, n int, hold time.Duration) error {
	var mu sync.Mutex
	var open []net.Conn
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp4", dst, 2*time.Second)
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 5)
			if _, err := c.Write([]byte("hello")); err != nil {
				c.Close()
				return
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				c.Close()
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Printf("burst %s: %d of %d new connections opened, %d refused; holding them %v\n", dst, len(open), n, n-len(open), hold)
	time.Sleep(hold)
	for _, c := range open {
		c.Close()
	}
	if len(open) == 0 {
		return errors.New("no connection opened")
	}
	return nil
}
