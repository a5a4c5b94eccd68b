package cni

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// inNetNS runs f on an OS thread switched into the network namespace at
// path (e.g. /var/run/netns/NAME or /proc/PID/ns/net); processes f starts
// inherit it. The thread is returned to its namespace afterwards, or
// retired (never unlocked) if that fails, so no goroutine runs in the
// wrong namespace.
func inNetNS(path string, f func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current netns: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it exits with the goroutine.
		return fmt.Errorf("return from netns %s: %w (after: %v)", path, err, ferr)
	}
	runtime.UnlockOSThread()
	return ferr
}
