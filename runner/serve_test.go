package runner

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// chunkedBody, the net/http path's reader, decodes through any size of
// read.
func TestChunkedBodyReads(t *testing.T) {
	for _, size := range []int{1, 2, 3, 100} {
		b := &chunkedBody{br: bufio.NewReaderSize(strings.NewReader("5;e=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT"), 16)}
		var got []byte
		p := make([]byte, size)
		for {
			n, err := b.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		require.Equal(t, "hello world", string(got), "reads of %d", size)
	}
	b := &chunkedBody{br: bufio.NewReader(strings.NewReader("5\r\nhelloXY"))}
	_, err := io.ReadAll(b)
	require.ErrorIs(t, err, errBadResponse)
}
