// Package netns is xnat's test topology helper: throwaway network
// namespaces joined by veth pairs, on which the real-traffic tests of
// ring, dataplane/xdpprog and dataplane/kernel run.
//
// A Topology belongs to one test. It names every namespace it creates
// with a prefix unique to the process and the test ("xnt-<pid>-<n>-"), so
// packages whose tests run in parallel never collide, and it registers
// its teardown with t.Cleanup, so namespaces (and with them every link
// inside them) are removed even when the test fails or calls FailNow.
// Sweep removes namespaces left by runs that crashed before their
// cleanup ran: their names carry the pid of a process that no longer
// exists.
//
// Everything is done through netlink and a few ioctls from Go; no
// external command is needed. Run executes a command inside a namespace
// for tests that want one.
//
// RequireRoot skips a test outside CI when the process cannot create
// namespaces (not root, or without CAP_SYS_ADMIN/CAP_NET_ADMIN), and
// fails it when CI=true: in CI the namespace tests must run.
//
// Code that must run inside a namespace (a socket whose netns matters,
// an XDP attachment by ifindex, /proc/sys/net) runs in NS.Do, which locks
// the goroutine to its OS thread, switches that thread into the
// namespace and back. A thread that cannot be switched back is never
// returned to the Go scheduler: it exits with its goroutine.
package netns
