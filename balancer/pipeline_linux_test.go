package balancer

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A pipelined request that reaches the proxy while the one before it is
// being served (the node holds its answer until then) is answered too:
// the proxy must not lose the client socket's readiness between the two
// requests (it waits for readability without a first read).
func TestPipelinedRequestArrivingMidExchange(t *testing.T) {
	first := make(chan struct{})
	release := make(chan struct{})
	a := backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/1" {
			close(first)
			<-release
		}
		_, _ = io.WriteString(w, "path="+r.URL.Path)
	}))
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""})})
	rc := dialRaw(t, p)
	rc.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	<-first
	rc.send("GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	// Wait until the proxy's kernel has acknowledged the second request:
	// it sits in the proxy's receive queue before the first answer goes.
	raw, err := rc.c.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var info *unix.TCPInfo
		var gerr error
		require.NoError(t, raw.Control(func(fd uintptr) {
			info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		}))
		require.NoError(t, gerr)
		return info.Unacked == 0 && info.Notsent_bytes == 0
	}, 5*time.Second, time.Millisecond)
	close(release)
	for _, path := range []string{"/1", "/2"} {
		resp, body := rc.response("GET")
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "path="+path, body)
	}
}
