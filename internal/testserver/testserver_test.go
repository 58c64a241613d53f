package testserver

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { Main(m) }

func TestPostgresAnswersQueries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, Postgres(t))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "select 40 + 2").Scan(&n))
	require.Equal(t, 42, n)
}

func TestRedisAnswersPing(t *testing.T) {
	c, err := net.DialTimeout("tcp", Redis(t), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("PING\r\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+PONG\r\n", line)
}

func TestEtcdServesKeys(t *testing.T) {
	// etcd's v3 JSON gateway: put a key, then read it back.
	ep := Etcd(t)
	put := `{"key":"cGFhc2tpdA==","value":"NDI="}`
	resp, err := http.Post(ep+"/v3/kv/put", "application/json", strings.NewReader(put))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Post(ep+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"cGFhc2tpdA=="}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(body), `"value":"NDI="`)
}

func TestHostPort(t *testing.T) {
	hp, err := hostPort("postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:5433", hp)
	_, err = hostPort("postgres://postgres@127.0.0.1/postgres")
	require.Error(t, err)
}

// FreePort's ports stay out of the kernel's ephemeral range and stay
// reserved against other processes: a second open of the port's lock file
// (another open file description, as another test binary would have)
// cannot take the lock.
func TestFreePortIsReservedOutsideTheEphemeralRange(t *testing.T) {
	seen := map[int]bool{}
	_, hi := reservedPortRange()
	for range 20 {
		port, err := FreePort()
		require.NoError(t, err)
		require.False(t, seen[port], "port %d handed out twice", port)
		seen[port] = true
		require.Less(t, port, hi, "port in the ephemeral range")
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		require.NoError(t, err, "reserved port is not free")
		l.Close()
		f, err := os.Open(filepath.Join(os.TempDir(), "paaskit-test-ports", strconv.Itoa(port)))
		require.NoError(t, err)
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		f.Close()
		require.ErrorIs(t, err, syscall.EWOULDBLOCK, "port %d not reserved", port)
	}
}

// Kill leaves none of PostgreSQL's processes behind, the backends (each
// in a session of its own, outside the server's process group) included,
// even one busy in a transaction; Restart then starts on the same data.
func TestKillLeavesNoBackendAndRestartWorks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := StartPostgres(ctx)
	require.NoError(t, err)
	defer s.Stop()
	for round := 0; round < 2; round++ {
		conn, err := pgx.Connect(ctx, s.Addr)
		require.NoError(t, err)
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS kept (a int)")
		require.NoError(t, err)
		kids := childrenOf(s.cmd.Process.Pid)
		require.NotEmpty(t, kids, "a running PostgreSQL has children (a backend at least)")
		s.Kill()
		for _, k := range kids {
			require.ErrorIs(t, syscall.Kill(k, 0), syscall.ESRCH, "child %d outlived Kill", k)
		}
		require.NoError(t, s.Restart(ctx), "round %d", round)
	}
}
