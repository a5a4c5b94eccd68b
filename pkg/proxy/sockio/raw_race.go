//go:build linux && race

package sockio

import (
	"errors"
	"syscall"
)

// Under the race detector reads and writes go through package syscall,
// whose annotations tell the detector that bytes written to one socket
// and read from another pass data between goroutines; everything else
// (the poller loop, errors, deadlines) is the same code as without it.

func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return n, errno(err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return n, errno(err)
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

func sysPeek(fd uintptr, b *[1]byte) (int, syscall.Errno) {
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, errno(err)
}
