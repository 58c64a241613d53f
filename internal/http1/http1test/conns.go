package http1test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// ServedAndClosed sends request (which should ask for "Connection:
// close") on each of conns and counts the connections that were answered
// and those the forwarder had closed: a connection cap's test holds many
// idle connections and checks how many were kept. Every answer must be
// 200.
func ServedAndClosed(t testing.TB, conns []net.Conn, request string) (served, closed int) {
	t.Helper()
	for _, c := range conns {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, request); err != nil {
			closed++
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			closed++
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("a held connection was answered %d, want 200", resp.StatusCode)
		}
		served++
	}
	return served, closed
}
