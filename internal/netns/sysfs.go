package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// WriteSysfs writes value to a file under /sys/class/net as the
// namespace sees it, e.g. WriteSysfs("veth0/queues/rx-0/rps_cpus", "2").
//
// A sysfs instance shows the network devices of the namespace that was
// current when it was mounted, so the write happens on a thread of its
// own: it leaves the process's mount namespace for a private one, enters
// the network namespace, mounts a fresh sysfs and writes there. The
// thread is never given back to the Go scheduler; it exits with its
// goroutine, taking its mounts with it.
func (n *NS) WriteSysfs(rel, value string) error {
	return n.sysfs(rel, func(p string) error { return os.WriteFile(p, []byte(value), 0o644) })
}

// ReadSysfs reads a file under /sys/class/net as the namespace sees it.
func (n *NS) ReadSysfs(rel string) (string, error) {
	var s string
	err := n.sysfs(rel, func(p string) error {
		b, err := os.ReadFile(p)
		s = string(b)
		return err
	})
	return s, err
}

func (n *NS) sysfs(rel string, f func(path string) error) error {
	if !filepath.IsLocal(rel) {
		return fmt.Errorf("netns %s: sysfs path %q is not below /sys/class/net", n.Name, rel)
	}
	res := make(chan error, 1)
	go func() {
		// No UnlockOSThread: this thread's mount and network namespaces
		// are no longer the process's, so it must die with the goroutine.
		runtime.LockOSThread()
		res <- n.sysfsOnThread(rel, f)
	}()
	return <-res
}

func (n *NS) sysfsOnThread(rel string, f func(path string) error) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("netns %s: private mount namespace: %w", n.Name, err)
	}
	// Keep the mount below from propagating back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("netns %s: making mounts private: %w", n.Name, err)
	}
	n.mu.RLock()
	err := vnetns.Set(n.handle)
	n.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("netns: entering %s: %w", n.Name, err)
	}
	dir, err := os.MkdirTemp("", "xnat-sysfs-")
	if err != nil {
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("sysfs", dir, "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("netns %s: mounting sysfs: %w", n.Name, err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if err := f(filepath.Join(dir, "class/net", rel)); err != nil {
		return fmt.Errorf("netns %s: sysfs: %w", n.Name, err)
	}
	return nil
}
