package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/etcd-backup/etcd-backup/internal/snapshot"
)

// TestMain lets a test re-run this binary as the real command, for what only
// a separate process shows: signals and exit statuses. It is also the child
// that runs bbolt's check, as the real command is.
func TestMain(m *testing.M) {
	snapshot.ServeChild()
	if os.Getenv("ETCD_BACKUP_TEST_MAIN") == "1" {
		limitFileSize(os.Getenv("ETCD_BACKUP_TEST_FSIZE"))
		main()
		return
	}
	os.Exit(m.Run())
}

// limitFileSize makes writes past bytes fail with EFBIG, as FAT's 4 GiB
// limit does, which no test can have on demand otherwise.
func limitFileSize(bytes string) {
	if bytes == "" {
		return
	}
	n, err := strconv.ParseUint(bytes, 10, 64)
	if err == nil {
		err = unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: n, Max: n})
	}
	if err != nil {
		panic(err)
	}
}

// cli runs the command in-process with only the given environment.
func cli(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code = run(t.Context(), args, lookup, &out, &errOut)
	return code, out.String(), errOut.String()
}

// selfCommand returns the test binary set up to run as etcd-backup.
func selfCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = []string{"ETCD_BACKUP_TEST_MAIN=1", "PATH=" + os.Getenv("PATH")}
	return cmd
}

// stallProxy relays TCP to a real etcd member, passing TLS through untouched
// so certificates still verify, and stops relaying server bytes once more
// than limit have passed: a snapshot then hangs midway, on demand, which a
// real server cannot be asked to do.
type stallProxy struct {
	ln      net.Listener
	target  string
	limit   int64
	stalled chan struct{}

	mu    sync.Mutex
	sent  int64
	once  sync.Once
	conns []net.Conn
}

func newStallProxy(t *testing.T, ip, target string, limit int64) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, limit: limit, stalled: make(chan struct{})}
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *stallProxy) endpoint() string { return "https://" + p.ln.Addr().String() }

func (p *stallProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go io.Copy(s, c)
		go p.relay(c, s)
	}
}

func (p *stallProxy) relay(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			p.sent += int64(n)
			over := p.sent > p.limit
			p.mu.Unlock()
			if over {
				p.once.Do(func() { close(p.stalled) })
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Close drops every relayed connection, as a dead server would.
func (p *stallProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
