package zmqloop

import (
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// maxFrames bounds how many frames of one message a loop keeps; the rest
// are read and dropped (the message is then refused with ErrFrames).
const maxFrames = 16

// CurveKeyPair is a CURVE key pair in Z85 text (40 characters each).
type CurveKeyPair struct {
	Public string
	Secret string
}

// NewCurveKeyPair generates a CURVE key pair. It returns
// ErrCurveUnsupported if libzmq was built without CURVE.
func NewCurveKeyPair() (CurveKeyPair, error) {
	if !zmq.HasCurve() {
		return CurveKeyPair{}, ErrCurveUnsupported
	}
	pub, sec, err := zmq.NewCurveKeypair()
	if err != nil {
		return CurveKeyPair{}, fmt.Errorf("zmqloop: generate CURVE key pair: %w", err)
	}
	return CurveKeyPair{Public: pub, Secret: sec}, nil
}

// Curve turns on CURVE encryption for a socket. The side that holds the
// service's long-term key pair is the CURVE server (ServerKey empty); the
// other side is a CURVE client and must know the server's public key. Which
// side binds does not matter. A client with the wrong ServerKey fails the
// handshake and its messages never arrive. Without a ZAP handler the server
// accepts any client key: CURVE here gives confidentiality and server
// authentication, and the envelope's HMAC authenticates the sender.
type Curve struct {
	// KeyPair is this socket's own key pair. A CURVE client may leave it
	// zero to get a fresh one per socket.
	KeyPair CurveKeyPair
	// ServerKey is the public key of the CURVE server this socket talks to.
	// Empty means this socket is the CURVE server.
	ServerKey string
}

func (c *Curve) validate() error {
	if c == nil {
		return nil
	}
	if !zmq.HasCurve() {
		return ErrCurveUnsupported
	}
	check := func(what, k string) error {
		if len(k) != 40 || len(zmq.Z85decode(k)) != 32 {
			return fmt.Errorf("zmqloop: CURVE %s %q: want 40 characters of Z85", what, k)
		}
		return nil
	}
	if c.ServerKey == "" || c.KeyPair != (CurveKeyPair{}) {
		if err := check("public key", c.KeyPair.Public); err != nil {
			return err
		}
		if err := check("secret key", c.KeyPair.Secret); err != nil {
			return err
		}
	}
	if c.ServerKey != "" {
		return check("server key", c.ServerKey)
	}
	return nil
}

func (c *Curve) apply(s *zmq.Socket) error {
	if c == nil {
		return nil
	}
	kp := c.KeyPair
	if c.ServerKey != "" && kp == (CurveKeyPair{}) {
		var err error
		if kp, err = NewCurveKeyPair(); err != nil {
			return err
		}
	}
	if c.ServerKey == "" {
		if err := s.SetCurveServer(1); err != nil {
			return err
		}
	} else if err := s.SetCurveServerkey(c.ServerKey); err != nil {
		return err
	}
	if err := s.SetCurvePublickey(kp.Public); err != nil {
		return err
	}
	return s.SetCurveSecretkey(kp.Secret)
}

// sockOpts describes one socket a loop or client opens.
type sockOpts struct {
	typ       zmq.Type
	bind      []string
	connect   []string
	maxSize   int
	curve     *Curve
	immediate bool
	linger    time.Duration // how long libzmq keeps sending after close
	sndhwm    int           // ZMQ_SNDHWM when > 0
	reconnect time.Duration // ZMQ_RECONNECT_IVL when > 0 (libzmq's default is 100ms)
	log       *slog.Logger  // told once if the per-frame fallback is in use
}

// openSocket creates, configures and binds/connects a socket; the calling
// goroutine owns it. It returns the endpoints actually bound (wildcard
// ports resolved). On error nothing is left open.
func openSocket(o sockOpts) (s *zmq.Socket, bound []string, err error) {
	if o.log != nil {
		noteIOPath(o.log)
	}
	s, err = zmq.NewSocket(o.typ)
	if err != nil {
		return nil, nil, fmt.Errorf("zmqloop: new %v socket: %w", o.typ, err)
	}
	defer func() {
		if err != nil {
			closeSocket(s)
			s, bound = nil, nil
		}
	}()
	if err = s.SetLinger(o.linger); err != nil {
		return nil, nil, fmt.Errorf("zmqloop: set linger: %w", err)
	}
	if o.maxSize > 0 {
		// libzmq applies ZMQ_MAXMSGSIZE per frame; the codec bounds the sum.
		if err = s.SetMaxmsgsize(int64(o.maxSize)); err != nil {
			return nil, nil, fmt.Errorf("zmqloop: set max message size %d: %w", o.maxSize, err)
		}
	}
	if o.sndhwm > 0 {
		if err = s.SetSndhwm(o.sndhwm); err != nil {
			return nil, nil, fmt.Errorf("zmqloop: set send high-water mark %d: %w", o.sndhwm, err)
		}
	}
	if o.reconnect > 0 {
		if err = s.SetReconnectIvl(o.reconnect); err != nil {
			return nil, nil, fmt.Errorf("zmqloop: set reconnect interval: %w", err)
		}
	}
	if o.immediate {
		if err = s.SetImmediate(true); err != nil {
			return nil, nil, fmt.Errorf("zmqloop: set immediate: %w", err)
		}
	}
	if err = o.curve.apply(s); err != nil {
		return nil, nil, fmt.Errorf("zmqloop: configure CURVE: %w", err)
	}
	for _, ep := range o.bind {
		if err = s.Bind(ep); err != nil {
			return nil, nil, fmt.Errorf("zmqloop: bind %v socket to %q: %w", o.typ, ep, err)
		}
		last, gerr := s.GetLastEndpoint()
		if gerr != nil || last == "" {
			last = ep
		}
		bound = append(bound, last)
	}
	for _, ep := range o.connect {
		if err = s.Connect(ep); err != nil {
			return nil, nil, fmt.Errorf("zmqloop: connect %v socket to %q: %w", o.typ, ep, err)
		}
	}
	return s, bound, nil
}

func closeSocket(s *zmq.Socket) {
	if s != nil {
		_ = s.SetLinger(0)
		_ = s.Close()
	}
}

func validateEndpoints(what string, eps []string) error {
	for _, ep := range eps {
		if !strings.Contains(ep, "://") {
			return fmt.Errorf("zmqloop: %s endpoint %q: want transport://address, e.g. tcp://127.0.0.1:5555", what, ep)
		}
	}
	return nil
}

// recvFrames reads one whole message. flags apply to the first frame (the
// rest of a multipart message is already there). It keeps at most maxFrames
// frames; over that it drains the rest and returns ErrFrames.
func recvFrames(s *zmq.Socket, flags zmq.Flag, frames [][]byte) ([][]byte, error) {
	frames = frames[:0]
	over := false
	for {
		f, err := s.RecvBytes(flags)
		if err != nil {
			return frames, err
		}
		flags = 0
		if len(frames) < maxFrames {
			frames = append(frames, f)
		} else {
			over = true
		}
		more, err := s.GetRcvmore()
		if err != nil {
			return frames, err
		}
		if !more {
			break
		}
	}
	if over {
		return frames, fmt.Errorf("zmqloop: message with more than %d frames: %w", maxFrames, ErrFrames)
	}
	return frames, nil
}

// sendFrames sends frames as one message.
func sendFrames(s *zmq.Socket, flags zmq.Flag, frames ...[]byte) error {
	for i, f := range frames {
		fl := flags
		if i < len(frames)-1 {
			fl |= zmq.SNDMORE
		}
		if _, err := s.SendBytes(f, fl); err != nil {
			return err
		}
		flags &^= zmq.DONTWAIT // later frames of a message never block
	}
	return nil
}

func isAgain(err error) bool { return zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) }
