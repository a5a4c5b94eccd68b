package httpwire

import (
	"reflect"
	"testing"
	"time"
	"unsafe"
)

func TestHeadLinesSplit(t *testing.T) {
	var hl HeadLines
	for _, c := range []struct {
		head string
		want []string
	}{
		{"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", []string{"HTTP/1.1 200 OK", "A: 1", "B: 2"}},
		{"GET / HTTP/1.1\nHost: h\n\n", []string{"GET / HTTP/1.1", "Host: h"}},
		{"GET / HTTP/1.1\nHost: h\n", []string{"GET / HTTP/1.1", "Host: h"}}, // no empty line
		{"GET / HTTP/1.1\nHost: h", []string{"GET / HTTP/1.1", "Host: h"}},   // no line end
		{"X\n\nY: after the end\n", []string{"X"}},
		{"\r\nX\n", []string{}},
		{"", []string{}},
	} {
		got := hl.Split([]byte(c.head))
		if !reflect.DeepEqual(append([]string{}, got...), c.want) {
			t.Errorf("Split(%q) = %q, want %q", c.head, got, c.want)
		}
	}
}

// TestHeadLinesReuse checks what HeadLines is for: lines equal to the
// previous head's are its strings (no copy), the others are copied, all
// into one allocation, and the strings never change afterwards.
func TestHeadLinesReuse(t *testing.T) {
	var hl HeadLines
	buf := []byte("HTTP/1.1 200 OK\r\nDate: 1\r\nServer: s\r\n\r\n")
	first := append([]string{}, hl.Split(buf)...)

	if n := testing.AllocsPerRun(100, func() { hl.Split(buf) }); n != 0 {
		t.Errorf("a repeated head: %.0f allocations, want 0", n)
	}
	again := hl.Split(buf)
	for i := range first {
		if unsafe.StringData(again[i]) != unsafe.StringData(first[i]) {
			t.Errorf("line %d of a repeated head was copied", i)
		}
	}

	changed := []byte("HTTP/1.1 200 OK\r\nDate: 2\r\nServer: s\r\n\r\n")
	var got []string
	n := testing.AllocsPerRun(10, func() {
		hl.Split(buf)
		got = hl.Split(changed)
	})
	if n != 2 { // one for the changed line of each head
		t.Errorf("two heads with one changed line each: %.0f allocations, want 2", n)
	}
	if !reflect.DeepEqual(got, []string{"HTTP/1.1 200 OK", "Date: 2", "Server: s"}) {
		t.Fatalf("got %q", got)
	}
	if unsafe.StringData(got[0]) != unsafe.StringData(first[0]) || unsafe.StringData(got[2]) != unsafe.StringData(first[2]) {
		t.Error("unchanged lines were copied")
	}
	kept := got[1]
	copy(changed, "XXXXXXXXXXXXXXXXXXXXXXXXXXXX") // the reader's buffer is reused
	if kept != "Date: 2" {
		t.Errorf("a returned line changed with the buffer: %q", kept)
	}

	// The same lines in another order (a Go map's order is random).
	hl.Split([]byte("S\nA: 1\nB: 2\nC: 3\n\n"))
	if n := testing.AllocsPerRun(10, func() {
		hl.Split([]byte("S\nC: 3\nA: 1\nB: 2\n\n"))
		hl.Split([]byte("S\nB: 2\nC: 3\nA: 1\n\n"))
	}); n != 0 {
		t.Errorf("reordered lines: %.0f allocations, want 0", n)
	}
	if got := hl.Split([]byte("S\nC: 3\nD: 4\nB: 2\n\n")); !reflect.DeepEqual(got, []string{"S", "C: 3", "D: 4", "B: 2"}) {
		t.Errorf("reordered with a new line: %q", got)
	}

	// Fewer lines, then more again: slots past the previous head's
	// lines hold older strings that must not be taken for equal ones.
	hl.Split([]byte("A\nB\nC\n\n"))
	hl.Split([]byte("A\n\n"))
	if got := hl.Split([]byte("A\nB\nD\n\n")); !reflect.DeepEqual(got, []string{"A", "B", "D"}) {
		t.Errorf("after a shorter head: %q", got)
	}
	if got := hl.Split([]byte("A\nB\nD\nE\nF\n\n")); !reflect.DeepEqual(got, []string{"A", "B", "D", "E", "F"}) {
		t.Errorf("growing: %q", got)
	}
}

func FuzzHeadLines(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), []byte("GET /x HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n"))
	f.Add([]byte("A\nB\nC\n\n"), []byte("A\n\n"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var hl, fresh HeadLines
		hl.Split(a)
		got := append([]string{}, hl.Split(b)...)
		want := append([]string{}, fresh.Split(b)...)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("after %q, Split(%q) = %q, fresh %q", a, b, got, want)
		}
	})
}

// TestHeadLinesManyLines checks that a head of many short lines, after
// another such head, is split in linear time: other positions are only
// searched after heads of at most MaxReusedFields lines. 200 000 lines
// compared with every earlier line would be 4·10¹⁰ comparisons.
func TestHeadLinesManyLines(t *testing.T) {
	var a, b []byte
	for i := range 200_000 {
		a = append(a, byte('a'+i%26), ':', '1', '\n')
		b = append(b, byte('a'+(i+1)%26), ':', '2', '\n')
	}
	var hl HeadLines
	hl.Split(a)
	done := make(chan []string)
	go func() { done <- hl.Split(b) }()
	select {
	case got := <-done:
		if len(got) != 200_000 || got[0] != "b:2" {
			t.Fatalf("got %d lines, first %q", len(got), got[0])
		}
	case <-time.After(20 * time.Second):
		t.Fatal("splitting 200 000 lines after 200 000 others did not finish in 20 s")
	}
}

// TestHeadLinesParsed: a line that repeats one of the previous head's (at
// any position) gives back what the parser recorded for it; a changed
// line, a line only an older head had, an unrecorded line and the first
// line give nothing.
func TestHeadLinesParsed(t *testing.T) {
	var hl HeadLines
	hl.Split([]byte("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nOld: x\r\nBad: \x01\r\n\r\n"))
	hl.SetParsed(1, Field{"A", "1"})
	hl.SetParsed(2, Field{"B", "2"})
	hl.SetParsed(3, Field{"Old", "x"})
	// line 4 failed the parser's checks: not recorded

	lines := hl.Split([]byte("HTTP/1.1 200 OK\r\nB: 2\r\nA: changed\r\nBad: \x01\r\nA: 1\r\n\r\n"))
	want := []struct {
		f  Field
		ok bool
	}{{Field{}, false}, {Field{"B", "2"}, true}, {Field{}, false}, {Field{}, false}, {Field{"A", "1"}, true}}
	for i := range lines {
		f, ok := hl.Parsed(i)
		if f != want[i].f || ok != want[i].ok {
			t.Errorf("line %d %q: Parsed = %v, %v; want %v, %v", i, lines[i], f, ok, want[i].f, want[i].ok)
		}
	}
	hl.SetParsed(1, Field{"B", "2"})

	// Old: x was recorded two heads ago, not for the last head.
	hl.Split([]byte("HTTP/1.1 200 OK\r\nOld: x\r\nB: 2\r\n\r\n"))
	if f, ok := hl.Parsed(1); ok {
		t.Errorf("a line only an older head had: Parsed = %v", f)
	}
	if f, ok := hl.Parsed(2); !ok || f != (Field{"B", "2"}) {
		t.Errorf("B: 2 recorded for the last head: Parsed = %v, %v", f, ok)
	}
	if _, ok := hl.Parsed(9); ok {
		t.Error("Parsed past the last line")
	}
	var none *HeadLines
	none.SetParsed(1, Field{"A", "1"})
	if _, ok := none.Parsed(1); ok {
		t.Error("nil HeadLines: Parsed found a record")
	}
}
