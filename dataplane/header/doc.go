// Package header gives allocation-free views of the packet headers xnat
// reads and rewrites — Ethernet (with one 802.1Q tag), IPv4, TCP, UDP and
// ICMPv4 — as byte slices with accessors, in the style of gVisor's
// pkg/tcpip/header, and the Internet checksum (RFC 1071) with incremental
// updates (RFC 1624).
//
// A view is a []byte whose length the caller has checked against the
// header's minimum (package dataplane's parser does); accessors then read
// the fixed offsets this package names (IPv4SrcAddr, TCPChecksum, …),
// which code that holds a header as an array uses directly. Setters change
// the bytes only: the caller records each change of a field a checksum
// covers in a Delta and applies it to every checksum that covers the
// field (Delta.Apply, Delta.ApplyL4), which is how NAT rewrites an
// address once and updates both the IPv4 header checksum and the TCP or
// UDP checksum over the pseudo-header (RewriteNAT).
//
// Addresses are IPv4 held as the big-endian value (192.0.2.1 is
// 0xC0000201), ports and other fields in host order.
package header
