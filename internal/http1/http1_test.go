package http1

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRequestHeadAccepts(t *testing.T) {
	var h Head
	raw := "POST /a?b=c HTTP/1.1\r\nHost: Example.com:80\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Keep:  spaced value \t\r\n\r\n"
	require.NoError(t, ParseRequestHead([]byte(raw), &h, 100, ""))
	require.Equal(t, "POST", string(h.Method))
	require.Equal(t, "/a?b=c", string(h.Target))
	require.Equal(t, "Example.com:80", string(h.Host))
	require.EqualValues(t, 5, h.ContentLength)
	require.True(t, h.ConnKeepAlive)
	kept := map[string]string{}
	for _, f := range h.Fields {
		if !f.Drop {
			kept[string(f.Name)] = string(f.Value)
		}
	}
	require.Equal(t, map[string]string{"Host": "Example.com:80", "X-Keep": "spaced value"}, kept)

	require.NoError(t, ParseRequestHead([]byte("GET / HTTP/1.0\r\n\r\n"), &h, 100, ""))
	require.Nil(t, h.Host)
	require.NoError(t, ParseRequestHead([]byte("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), &h, 100, ""))
	require.NoError(t, ParseRequestHead([]byte("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"), &h, 100, ""))
	require.True(t, h.Chunked)
}

func TestParseResponseHead(t *testing.T) {
	var h Head
	require.NoError(t, ParseResponseHead([]byte("HTTP/1.1 404 Not Found\r\nX-Paaskit-Miss: 1\r\nContent-Length: 0\r\n\r\n"), &h, 100, "x-paaskit-miss"))
	require.Equal(t, 404, h.Status)
	require.True(t, h.MissMark)
	require.NoError(t, ParseResponseHead([]byte("HTTP/1.1 204\r\n\r\n"), &h, 100, ""))
	require.Equal(t, 204, h.Status)
	for _, bad := range []string{
		"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 abc OK\r\n\r\n", "HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
	} {
		require.ErrorIs(t, ParseResponseHead([]byte(bad), &h, 100, ""), ErrMalformed, "%q", bad)
	}
}

func TestParseChunkSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "a": 10, "FF": 255, "10;ext=1": 16, "10; a = b ; c": 16} {
		n, err := ParseChunkSize([]byte(in))
		require.NoError(t, err, in)
		require.Equal(t, want, n, in)
	}
	for _, in := range []string{"", "g", "-1", "0x10", "1234567890abcdef0", ";x", "5 ;x", "5 ", "+5"} {
		_, err := ParseChunkSize([]byte(in))
		require.Error(t, err, in)
	}
}

func TestHeadEnd(t *testing.T) {
	for in, want := range map[string]int{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest": 27,
		"GET / HTTP/1.1\r\nHost: x\r\n":         -1,
		"GET / HTTP/1.1\r\nHost: x\r\n\r":       -1,
		"":                                      -1,
		"\r\nGET":                               2,
		"GET / HTTP/1.1\nHost: x\r\n\r\n":       15,
		"\n":                                    1,
	} {
		require.Equal(t, want, HeadEnd([]byte(in)), "%q", in)
	}
}

func TestAppendFieldsSkipsDropped(t *testing.T) {
	var h Head
	raw := "GET / HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nAccept: */*\r\n\r\n"
	if err := ParseRequestHead([]byte(raw), &h, 100, ""); err != nil {
		t.Fatal(err)
	}
	got := string(AppendFields([]byte("> "), h.Fields))
	want := "> Host: a.example\r\nAccept: */*\r\n"
	if got != want {
		t.Fatalf("AppendFields = %q, want %q", got, want)
	}
}

func TestPrintable(t *testing.T) {
	if got := Printable("bad\r\nfield\x00é"); got != "bad??field???" {
		t.Fatalf("Printable = %q", got)
	}
	if got := Printable(strings.Repeat("a", 300)); len(got) != 200 {
		t.Fatalf("Printable kept %d bytes, want 200", len(got))
	}
}

func TestAppendRequestHead(t *testing.T) {
	var h Head
	raw := "POST /up HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: b.example\r\nConnection: keep-alive\r\nX-App: 1\r\nContent-Length: 3\r\n\r\n"
	require.NoError(t, ParseRequestHead([]byte(raw), &h, 100, ""))
	require.Equal(t, "POST /up HTTP/1.1\r\nHost: a.example\r\nX-App: 1\r\nX-Forwarded-For: 10.0.0.1, 192.0.2.1\r\n"+
		"X-Forwarded-Proto: http\r\nX-Forwarded-Host: a.example\r\nContent-Length: 3\r\n\r\n",
		string(AppendRequestHead([]byte("pre"), &h, nil, "192.0.2.1", "http", false))[3:])
	require.Equal(t, "POST /up HTTP/1.1\r\nHost: a.example\r\nX-App: 1\r\nX-Forwarded-For: 10.0.0.1, 192.0.2.1\r\n"+
		"X-Forwarded-Proto: https\r\nX-Forwarded-Host: b.example\r\nContent-Length: 3\r\n\r\n",
		string(AppendRequestHead(nil, &h, nil, "192.0.2.1", "http", true)), "the client's X-Forwarded-Proto and -Host kept")
	// Kept only where the client sent them; a repeated one once.
	require.NoError(t, ParseRequestHead([]byte("GET / HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-Host: b.example\r\nX-Forwarded-Host: c.example\r\n\r\n"), &h, 100, ""))
	require.Equal(t, "GET / HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 192.0.2.1\r\n"+
		"X-Forwarded-Host: b.example\r\nX-Forwarded-Proto: https\r\n\r\n",
		string(AppendRequestHead(nil, &h, nil, "192.0.2.1", "https", true)), "the front's own X-Forwarded-Proto where the client sent none")

	// HTTP/1.0 without Host gets the given one; an upgrade keeps its
	// Connection and Upgrade fields; chunked stays chunked.
	require.NoError(t, ParseRequestHead([]byte("GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"), &h, 100, ""))
	require.Equal(t, "GET /ws HTTP/1.1\r\nHost: d.example\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\n"+
		"Connection: Upgrade\r\nUpgrade: echo\r\n\r\n",
		string(AppendRequestHead(nil, &h, []byte("d.example"), "192.0.2.1", "https", false)))
	require.NoError(t, ParseRequestHead([]byte("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"), &h, 100, ""))
	require.Equal(t, "PUT / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n",
		string(AppendRequestHead(nil, &h, nil, "192.0.2.1", "http", false)))
}

func TestDropPrefixed(t *testing.T) {
	var h Head
	require.NoError(t, ParseResponseHead([]byte("HTTP/1.1 200 OK\r\nX-Paaskit-Miss: 1\r\nx-PAASKIT-other: 2\r\nX-Paas: 3\r\nContent-Length: 0\r\n\r\n"), &h, 100, ""))
	DropPrefixed(h.Fields, "x-paaskit-")
	require.Equal(t, "X-Paas: 3\r\n", string(AppendFields(nil, h.Fields)))
}

func TestAppendReply(t *testing.T) {
	require.Equal(t, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"+
		"Connection: close\r\nContent-Length: 5\r\nX-Miss: 1\r\n\r\nnone\n",
		string(AppendReply(nil, 404, "Not Found", "none\n", []string{"X-Miss: 1"}, false, true)))
	require.Equal(t, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"+
		"Content-Length: 4\r\n\r\n",
		string(AppendReply(nil, 502, "Bad Gateway", "bad\n", nil, true, false)), "kept alive, no body (HEAD)")
}
