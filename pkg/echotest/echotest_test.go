package echotest

import (
	"bufio"
	"io"
	"net"
	"testing"
)

func TestEchoServers(t *testing.T) {
	b := Start(t, Bytes)
	c, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("raw bytes"))
	_ = c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "raw bytes" {
		t.Errorf("Bytes echoed %q", got)
	}
	l := Start(t, Lines("echo: "))
	c, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, line := range []string{"one", "two"} {
		_, _ = c.Write([]byte(line + "\n"))
		if got, _ := br.ReadString('\n'); got != "echo: "+line+"\n" {
			t.Errorf("Lines answered %q to %q", got, line)
		}
	}
}
