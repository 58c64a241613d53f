package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/paaskit/paaskit/zmqloop"
	zmq "github.com/pebbe/zmq4"
	"github.com/redis/go-redis/v9"
)

func TestPostgresRestartedMidStreamEveryPointOnce(t *testing.T) {
	ctx := context.Background()
	pg, err := testserver.StartPostgres(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	sink, err := NewPostgresSink(PostgresConfig{URL: pg.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	g := newRig(t)
	c := g.collector(t, sink)
	running(t, "collector", c.Run)
	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	// Three phases, so that the crash is mid-stream by construction
	// rather than by timing: points written before it, points that
	// meet the dead server (at least one failed write), and points
	// after the restart. (A crash between two writes alone can cost no
	// failed write at all: the pool pings an idle connection before
	// use and dials a new one.)
	const phase = 20000
	emit := func() {
		for i := range phase {
			e.Count(Tags{App: "web", Instance: 1}, "requests", 1)
			if i%2000 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	emit()
	eventually(t, "some points in PostgreSQL", func() bool { return c.Stats().Sinks[0].Written > 5000 })
	pg.Kill()
	emit()
	eventually(t, "a write to fail on the dead server", func() bool { return c.Stats().Sinks[0].Errors > 0 })
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	emit()
	const n = 3 * phase
	eventually(t, "every point written", func() bool {
		st := c.Stats().Sinks[0]
		return st.Written == n && st.Backlog == 0
	})
	if total, distinct := countPoints(t, pg.Addr); total != n || distinct != n {
		t.Fatalf("%d rows, %d distinct, want %d each", total, distinct, n)
	}
}

func TestRedisDownOtherSinksGoOnAndBacklogArrives(t *testing.T) {
	ctx := context.Background()
	rs, err := testserver.StartRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Stop() })
	rsink, err := NewRedisSink(RedisConfig{Addr: rs.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer rsink.Close()
	g := newRig(t)
	files, err := NewFileSink(FileSinkConfig{Dir: filepath.Join(g.dir, "logs")})
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	c := g.collector(t, files, rsink)
	running(t, "collector", c.Run)
	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	tags := Tags{App: "web", Instance: 1, Stream: "stdout"}
	for i := range 100 {
		e.Log(tags, []byte(fmt.Sprintf("before %d", i)))
	}
	// In Redis, and the sink's Write returned: Redis can hold all 100
	// while the Write still reads its replies, and a kill then fails the
	// batch, which is written again, all of it, into the restarted,
	// empty Redis (600 entries, not 500).
	eventually(t, "100 lines in Redis", func() bool {
		n, _ := rdb.XLen(ctx, rsink.LogStream("web")).Result()
		return n == 100 && c.Stats().Sinks[1].Written == 100
	})
	rs.Kill()
	for i := range 500 {
		e.Log(tags, []byte(fmt.Sprintf("during %d", i)))
	}
	eventually(t, "the file sink to go on", func() bool { l, _ := files.Tail("web", 1000); return len(l) == 600 })
	eventually(t, "the Redis sink to be down", func() bool { return c.Stats().Sinks[1].Down })
	if b := c.Stats().Sinks[1].Backlog; b == 0 {
		t.Fatalf("Redis is down and its backlog is empty")
	}
	// Redis comes back empty (no persistence): the backlog is written.
	if err := rs.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the backlog in Redis", func() bool {
		n, _ := rdb.XLen(ctx, rsink.LogStream("web")).Result()
		return n == 500 && c.Stats().Sinks[1].Backlog == 0
	})
	first, err := rdb.XRangeN(ctx, rsink.LogStream("web"), "-", "+", 1).Result()
	if err != nil || first[0].Values["text"] != "during 0" {
		t.Fatalf("first entry after the outage %+v %v", first, err)
	}
}

func TestSinkDownBacklogSurvivesCollectorRestart(t *testing.T) {
	g := newRig(t)
	good, down := newMemSink("good"), newMemSink("down")
	down.setFail(true)
	c := g.collector(t, good, down)
	stopC := running(t, "collector", c.Run)
	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	for range 1000 {
		e.Gauge(Tags{App: "web"}, "queue_length", 3)
	}
	eventually(t, "the good sink", func() bool { return good.count() == 1000 })
	if down.count() != 0 || c.Stats().Sinks[1].Backlog != 1000 {
		t.Fatalf("down sink: %d written, backlog %d", down.count(), c.Stats().Sinks[1].Backlog)
	}
	stopC()
	// The collector restarts with the sink still down, then it returns.
	c2 := g.collector(t, good, down)
	if b := c2.Stats().Sinks[1].Backlog; b != 1000 {
		t.Fatalf("after a restart the down sink's backlog is %d, want 1000", b)
	}
	running(t, "collector 2", func(ctx context.Context) error {
		// libzmq releases a closed socket's port in its own thread: the
		// first bind of the same port may find it still taken.
		for start := time.Now(); ; {
			err := c2.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), "address already in use") || time.Since(start) > 10*time.Second {
				return err
			}
			time.Sleep(50 * time.Millisecond)
			c2 = g.collector(t, good, down)
		}
	})
	down.setFail(false)
	eventually(t, "the backlog written", func() bool { return down.count() == 1000 })
	time.Sleep(100 * time.Millisecond)
	if good.count() != 1000 || good.repeats != 0 {
		t.Fatalf("good sink has %d records, %d repeats after the restart", good.count(), good.repeats)
	}
}

const childEnv = "STATS_TEST_CHILD_COLLECTOR"

// runChildCollector is the collector process of TestCollectorKilled.
func runChildCollector(spec string) {
	var a struct{ Pull, Ack, Dir string }
	if err := json.Unmarshal([]byte(spec), &a); err != nil {
		panic(err)
	}
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	files, err := NewFileSink(FileSinkConfig{Dir: filepath.Join(a.Dir, "logs"), ChunkBytes: 64 << 10})
	if err != nil {
		panic(err)
	}
	c, err := NewCollector(CollectorConfig{Bind: []string{a.Pull}, AckBind: []string{a.Ack}, Codec: codec,
		Dir: filepath.Join(a.Dir, "collector"), Sinks: []Sink{files}})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		ch := make(chan os.Signal, 1)
		<-ch
		cancel()
	}()
	fmt.Println("ready")
	if err := c.Run(ctx); err != nil {
		panic(err)
	}
}

func startChild(t *testing.T, spec string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+spec)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestCollectorKilledAndRestartedLosesNothing kills the collector process
// with SIGKILL mid-stream STATS_KILLS times (default 2) while an emitter
// keeps emitting; every line lands in the files exactly once, in order.
func TestCollectorKilledAndRestartedLosesNothing(t *testing.T) {
	kills := 2
	if v, err := strconv.Atoi(os.Getenv("STATS_KILLS")); err == nil && v > 0 {
		kills = v
	}
	g := newRig(t)
	spec, _ := json.Marshal(map[string]string{"Pull": g.pull, "Ack": g.ack, "Dir": g.dir})
	child := startChild(t, string(spec))
	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	per := 10000
	n := per * (kills + 1)
	tags := Tags{App: "web", Instance: 2, Stream: "stderr"}
	emitted := 0
	emit := func(k int) {
		for ; k > 0; k-- {
			e.Log(tags, []byte(fmt.Sprintf("line %06d", emitted)))
			emitted++
			if emitted%500 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
	for range kills {
		emit(per / 2)
		acked := e.Stats().Acked
		eventually(t, "acknowledgements", func() bool { return e.Stats().Acked > acked })
		child.Process.Kill() // SIGKILL: no flush, no goodbye
		child.Wait()
		emit(per / 2) // while it is gone: queued, then spooled
		eventually(t, "the emitter to notice", func() bool { return !e.Stats().Online })
		child = startChild(t, string(spec))
	}
	emit(per)
	eventually(t, "every line acknowledged", func() bool { return e.Stats().Acked == uint64(n) })
	ackedAt := time.Now()
	var (
		lines   []LogLine
		tailErr error
	)
	eventuallyf(t, func() bool {
		r, err := NewFileSink(FileSinkConfig{Dir: filepath.Join(g.dir, "logs"), NoCompress: true})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		lines, tailErr = r.Tail("web", 2*n)
		return tailErr == nil && len(lines) >= n
	}, func() string {
		return fmt.Sprintf("every line in the files: %d of %d (missing: %s), last error %v", len(lines), n, missingLines(lines, n), tailErr)
	})
	t.Logf("every line in the files %v after the last acknowledgement", time.Since(ackedAt).Round(time.Millisecond))
	if len(lines) != n {
		t.Fatalf("%d lines in the files, want %d", len(lines), n)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("line %06d", i); string(l.Text) != want {
			t.Fatalf("line %d is %q, want %q", i, l.Text, want)
		}
	}
}

func TestEmitterDiskFullCountsLossKeepsSpool(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a 256 KiB tmpfs for the spool (needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	g := newRig(t)
	e := g.emitter(t, func(c *EmitterConfig) { c.SpoolDir = dir; c.SegmentBytes = 32 << 10; c.QueueBytes = 64 << 10 })
	// No collector: everything past the memory queue goes to the spool,
	// until the tmpfs is full.
	line := []byte(strings.Repeat("x", 200))
	tags := Tags{App: "web", Stream: "stdout"}
	for e.Stats().Dropped < 500 {
		e.Log(tags, line)
	}
	st := e.Stats()
	if st.Dropped == 0 || st.Spooled == 0 {
		t.Fatalf("stats %+v", st)
	}
	// The segments written before the disk filled are intact: every
	// record in them reads back.
	segs, _ := filepath.Glob(filepath.Join(dir, "spool-*.seg"))
	var onDisk uint64
	for _, p := range segs {
		fi, _ := os.Stat(p)
		size, count, err := scanSegment(p)
		if err != nil || size != fi.Size() {
			t.Fatalf("segment %s: %d of %d bytes readable (%v)", p, size, fi.Size(), err)
		}
		onDisk += count
	}
	if onDisk == 0 {
		t.Fatal("nothing spooled")
	}
	// The collector comes: every record not dropped arrives, once.
	sink := newMemSink("mem")
	running(t, "collector", g.collector(t, sink).Run)
	running(t, "emitter", e.Run)
	eventually(t, "the loss reported as a counter", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		for _, r := range sink.recs {
			if r.App == "paaskit" && r.Name == "emitter_records_dropped" && r.Value == float64(st.Dropped) {
				return true
			}
		}
		return false
	})
	e.Log(tags, []byte("after"))
	want := int(e.Stats().Emitted - e.Stats().Dropped)
	eventually(t, "every kept record", func() bool { return sink.count() == want && e.Stats().Acked == uint64(want) })
	if sink.repeats != 0 {
		t.Fatalf("%d repeats", sink.repeats)
	}
	if got := string(sink.recs[len(sink.recs)-1].Text); got != "after" {
		t.Fatalf("last record %q", got)
	}
}

func TestMalformedAndUnsignedMessagesDroppedAndCounted(t *testing.T) {
	g := newRig(t)
	sink := newMemSink("mem")
	c := g.collector(t, sink)
	running(t, "collector", c.Run)
	<-time.After(50 * time.Millisecond)

	raw, err := zmq.NewSocket(zmq.PUSH)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetLinger(0)
	if err := raw.Connect(g.pull); err != nil {
		t.Fatal(err)
	}
	// Unsigned and forged.
	raw.SendMessage("hello")
	raw.SendMessage("k1", `{"type":"stats.batch","id":"x1","ts":1,"body":{}}`, "not a mac")
	raw.SendMessage("nokey", `{"type":"stats.batch","id":"x2","ts":1}`, strings.Repeat("m", 32))
	// Signed with another secret.
	otherRing, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("another secret of 32 bytes......")})
	other, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: otherRing})
	forged, _ := other.Seal(zmqloop.Message{Type: TypeBatch, Body: json.RawMessage(`{"emitter":"x","from":1,"records":[]}`)})
	raw.SendMessage(forged)
	// Authentic, but malformed bodies.
	bad := []string{
		`"not an object"`,
		`{"emitter":"e","from":1,"records":[]}`,
		`{"emitter":"../etc","from":1,"records":[{"seq":1,"kind":"log","ts":1,"app":"web","text":"x"}]}`,
		`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"log","ts":1,"app":"../../etc","text":"x"}]}`,
		`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"nonsense","ts":1,"app":"web"}]}`,
		`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"counter","app":"web","name":"x","value":1}]}`,
		`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"counter","ts":1,"app":"web","name":"Bad Name","value":1}]}`,
		`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"usage","ts":1,"app":"web","name":"cpu_seconds","value":-5}]}`,
		`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"log","ts":1,"app":"web","text":"a"},{"seq":3,"kind":"log","ts":1,"app":"web","text":"b"}]}`,
		`{"emitter":"e","from":1,"records":[{"seq":0,"kind":"log","ts":1,"app":"web","text":"a"}]}`,
	}
	p, err := zmqloop.NewPusher(zmqloop.SenderConfig{Connect: []string{g.pull}, Codec: g.codec})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		if err := p.Push(context.Background(), TypeBatch, json.RawMessage(b)); err != nil {
			t.Fatal(err)
		}
	}
	defer p.Close()
	eventually(t, "refusals counted", func() bool {
		st := c.Stats()
		return st.Malformed == uint64(len(bad)) && st.Rejected >= 4
	})
	// The collector is still up: a real emitter gets through.
	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	e.Count(Tags{App: "web"}, "requests", 1)
	eventually(t, "a good record after the bad", func() bool { return sink.count() == 1 })
	if st := c.Stats(); st.Accepted != 1 {
		t.Fatalf("accepted %d", st.Accepted)
	}
}

func TestOversizedLogLineTruncatedWithMarker(t *testing.T) {
	g := newRig(t)
	sink := newMemSink("mem")
	c, err := NewCollector(CollectorConfig{Bind: []string{g.pull}, AckBind: []string{g.ack}, Codec: g.codec,
		Dir: filepath.Join(g.dir, "collector"), Sinks: []Sink{sink}, MaxLineBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	running(t, "collector", c.Run)
	e := g.emitter(t, func(c *EmitterConfig) { c.MaxLineBytes = 4001 }) // odd: a cut falls inside a 2-byte character
	running(t, "emitter", e.Run)
	long := []byte(strings.Repeat("é", 3000)) // 6000 bytes
	e.Log(Tags{App: "web"}, long)
	e.Log(Tags{App: "web"}, []byte("short"))
	// A sender with a larger bound of its own: the collector cuts too.
	p, err := zmqloop.NewPusher(zmqloop.SenderConfig{Connect: []string{g.pull}, Codec: g.codec})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	body := fmt.Sprintf(`{"emitter":"foreign","from":1,"records":[{"seq":1,"kind":"log","ts":1,"app":"web","text":%q}]}`, strings.Repeat("y", 5000))
	if err := p.Push(context.Background(), TypeBatch, json.RawMessage(body)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "three lines", func() bool { return sink.count() == 3 })
	for _, r := range sink.recs {
		switch r.Emitter {
		case "foreign":
			if len(r.Text) > 1000 || !r.Truncated || !strings.HasSuffix(string(r.Text), TruncatedMarker) {
				t.Fatalf("foreign line: %d bytes, truncated %v", len(r.Text), r.Truncated)
			}
		default:
			if string(r.Text) == "short" {
				if r.Truncated {
					t.Fatal("short line marked truncated")
				}
				continue
			}
			if !r.Truncated || !strings.HasSuffix(string(r.Text), TruncatedMarker) || len(r.Text) > 1000 {
				t.Fatalf("long line: %d bytes, truncated %v, ends %q", len(r.Text), r.Truncated, r.Text[len(r.Text)-20:])
			}
			if !utf8.Valid(r.Text) || !strings.HasPrefix(string(r.Text), "ééé") {
				t.Fatalf("long line cut inside a character")
			}
		}
	}
	if e.Stats().Truncated != 1 || c.Stats().Truncated != 2 {
		t.Fatalf("emitter truncated %d, collector %d", e.Stats().Truncated, c.Stats().Truncated)
	}
}

func TestClockGoingBackwards(t *testing.T) {
	g := newRig(t)
	files, err := NewFileSink(FileSinkConfig{Dir: filepath.Join(g.dir, "logs")})
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	sink := newMemSink("mem")
	running(t, "collector", g.collector(t, files, sink).Run)
	clk := &fakeClock{t: time.Now()}
	e := g.emitter(t, func(c *EmitterConfig) { c.Now = clk.Now })
	running(t, "emitter", e.Run)
	tags := Tags{App: "web"}
	start := clk.Now()
	for i := range 30 {
		e.Log(tags, []byte(fmt.Sprintf("line %d", i)))
		if i == 9 {
			clk.Add(-10 * time.Minute) // NTP steps the clock back
		}
		clk.Add(time.Second)
	}
	eventually(t, "all 30", func() bool { return sink.count() == 30 })
	for i, r := range sink.recs {
		if string(r.Text) != fmt.Sprintf("line %d", i) || r.Seq != uint64(i+1) {
			t.Fatalf("record %d out of order: %q seq %d", i, r.Text, r.Seq)
		}
	}
	// Since the original start: the ten lines before the step.
	eventually(t, "files", func() bool { l, _ := files.Tail("web", 100); return len(l) == 30 })
	got, err := files.Since("web", start, 0)
	if err != nil || len(got) != 10 || string(got[0].Text) != "line 0" {
		t.Fatalf("Since(start) = %d lines, %v", len(got), err)
	}
	all, _ := files.Since("web", start.Add(-time.Hour), 0)
	if len(all) != 30 || string(all[10].Text) != "line 10" {
		t.Fatalf("Since an hour before: %d lines", len(all))
	}
}

// The collector's disk full: journal writes fail while batches go on
// arriving, nothing unwritten is
// acknowledged, and once trimming the journal makes room every line
// reaches the files exactly once, in order. (A journal write is the
// buffer since the last, about 1 MiB: a disk with room for less never
// takes one, so the tmpfs has a few MiB.)
func TestCollectorJournalDiskFullLosesNothing(t *testing.T) {
	g := newRig(t)
	dir := filepath.Join(g.dir, "collector")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a 6 MiB tmpfs for the journal (needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	files, err := NewFileSink(FileSinkConfig{Dir: filepath.Join(g.dir, "logs"), NoCompress: true})
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	// A sink that is down until the journal has filled holds the journal
	// (the file sink alone can keep it trimmed, and on a loaded machine
	// the tmpfs then never filled).
	gate := newMemSink("gate")
	gate.setFail(true)
	c, err := NewCollector(CollectorConfig{Bind: []string{g.pull}, AckBind: []string{g.ack}, Codec: g.codec,
		Dir: dir, Sinks: []Sink{files, gate}, SegmentBytes: 256 << 10, RetryInterval: 50 * time.Millisecond, Logger: g.log})
	if err != nil {
		t.Fatal(err)
	}
	running(t, "collector", c.Run)
	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	const n = 100000 // about 22 MB of records through a 6 MiB journal
	tags := Tags{App: "web", Instance: 3, Stream: "stdout"}
	pad := strings.Repeat("p", 150)
	for i := range n {
		e.Log(tags, fmt.Appendf(nil, "line %06d %s", i, pad))
		if i%1000 == 999 {
			time.Sleep(time.Millisecond)
		}
	}
	eventually(t, "a journal write failed: the tmpfs filled", func() bool { return c.Stats().JournalErrors > 0 })
	gate.setFail(false)
	eventually(t, "every line acknowledged", func() bool { return e.Stats().Acked == n })
	eventually(t, "every line in the sinks", func() bool { return c.Stats().Sinks[0].Written >= n && gate.count() == n })
	lines, err := files.Tail("web", 2*n)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != n {
		t.Fatalf("%d lines in the files, want %d", len(lines), n)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("line %06d %s", i, pad); string(l.Text) != want {
			t.Fatalf("line %d is %.20q, want %.20q", i, l.Text, want)
		}
	}
}

// missingLines says which of the lines "line 000000".."line <n-1>" are not
// among lines, as ranges: a run lost around a kill and a tail the sink
// has not reached yet read differently.
func missingLines(lines []LogLine, n int) string {
	seen := make([]bool, n)
	for _, l := range lines {
		var k int
		if _, err := fmt.Sscanf(string(l.Text), "line %d", &k); err == nil && k >= 0 && k < n {
			seen[k] = true
		}
	}
	var b strings.Builder
	for i := 0; i < n; i++ {
		if seen[i] {
			continue
		}
		j := i
		for j+1 < n && !seen[j+1] {
			j++
		}
		if b.Len() > 200 {
			b.WriteString(" ...")
			break
		}
		fmt.Fprintf(&b, " %d-%d", i, j)
		i = j
	}
	if b.Len() == 0 {
		return "none"
	}
	return strings.TrimSpace(b.String())
}
