// Package header gives allocation-free views of the packet headers xnat
// reads and rewrites — Ethernet (with one 802.1Q tag), IPv4, TCP, UDP and
// ICMPv4 — as byte slices with accessors, in the style of gVisor's
// pkg/tcpip/header, and the Internet checksum (RFC 1071) with incremental
// updates (RFC 1624).
//
// A view is a []byte whose length the caller has checked against the
// header's minimum (the Parse helpers in package dataplane do); accessors
// then read fixed offsets. Setters that change a field covered by a
// checksum come in two kinds: Set… changes the bytes only, and the caller
// folds the change into the checksums with Adjust, which is how NAT
// rewrites an address once and applies the same delta to the IPv4 header
// checksum and to the TCP or UDP checksum over the pseudo-header.
//
// Addresses are IPv4 held as the big-endian value (192.0.2.1 is
// 0xC0000201), ports and other fields in host order.
package header
