package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sampleEvery is how often a child's memory is read from /proc. The kernel
// keeps no high-water mark of anonymous memory, so a short spike between two
// samples can be missed; the report says the figure is sampled.
const sampleEvery = 5 * time.Millisecond

// usage is what one child process (or one sequence of them) cost.
type usage struct {
	start time.Time
	wall  time.Duration
	cpu   time.Duration // user plus system, of the process and the children it waited for
	// peakRSS is the last VmHWM read: the kernel's high-water mark of the
	// resident set since exec, short only of growth in the last sample
	// period. wait4's ru_maxrss is of no use here: Go starts children with
	// vfork, and exec folds the parent's high-water mark (this process, with
	// etcd in it) into the child's.
	peakRSS  int64
	peakAnon int64         // the largest RssAnon read
	anonAt   time.Duration // when, after start, peakAnon was read
}

// add accounts for a step run after u: times add up, peaks do not.
func (u usage) add(v usage) usage {
	return usage{
		start:    u.start,
		wall:     u.wall + v.wall,
		cpu:      u.cpu + v.cpu,
		peakRSS:  max(u.peakRSS, v.peakRSS),
		peakAnon: max(u.peakAnon, v.peakAnon),
	}
}

// command is one program to run and measure.
type command struct {
	path string
	args []string
	env  []string
}

func (c command) String() string {
	return strings.Join(append([]string{c.path}, c.args...), " ")
}

// settle collects this process's garbage before a measurement, so that the
// collector's work does not slow down the etcd server or the emulator
// mid-run. While the upload rows keep the heap (see keepHeap), the memory
// freed stays with this process. It also writes back what earlier runs left
// dirty in the page cache, so that no run pays for another's writes.
func (r *runner) settle() {
	unix.Sync()
	if r.heapKept {
		runtime.GC()
		return
	}
	debug.FreeOSMemory()
}

// heapPerByte is the heap the emulator takes per byte of an upload: it
// holds the object whole several times over, in buffers grown by doubling
// (see emulator).
const heapPerByte = 12

// keepHeap makes this process keep the memory it has faulted in until
// restore. Each upload to the emulator allocates several copies of the
// object; on a VM where faulting in fresh memory is slow, that, not the
// client, would set the pace of every upload (a 256 MiB upload took 3 s or
// 14 s depending on what the runtime had returned to the kernel). So the
// collector runs only in settle, before each measurement, and with no
// memory limit the runtime returns nothing: each upload reuses the pages
// the one before it faulted in.
func (r *runner) keepHeap() (restore func()) {
	percent := debug.SetGCPercent(-1)
	limit := debug.SetMemoryLimit(math.MaxInt64)
	r.heapKept = true
	return func() {
		r.heapKept = false
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
		r.settle()
	}
}

// measure runs c to completion and reports its wall time and memory. Its
// output goes to out; on failure the error carries the tail of it.
func measure(ctx context.Context, c command, out *bytes.Buffer) (usage, error) {
	cmd := exec.CommandContext(ctx, c.path, c.args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return usage{}, fmt.Errorf("start %s: %w", c.path, err)
	}
	// Start returns once the child has exec'd, so every sample is of the
	// measured program, never of the forked copy of this process.
	stop := make(chan struct{})
	peak := make(chan memPeaks, 1)
	go func() { peak <- sampleMemory(cmd.Process.Pid, start, stop) }()
	err := cmd.Wait()
	wall := time.Since(start)
	close(stop)
	mem := <-peak
	if err != nil {
		return usage{}, fmt.Errorf("%s: %w\n%s", c, err, tail(out.Bytes(), 2048))
	}
	ps := cmd.ProcessState
	return usage{start: start, wall: wall, cpu: ps.UserTime() + ps.SystemTime(), peakRSS: mem.hwm, peakAnon: mem.anon, anonAt: mem.anonAt}, nil
}

type memPeaks struct {
	hwm, anon int64
	anonAt    time.Duration
}

// sampleMemory reads /proc/pid/status until stop is closed and returns the
// last VmHWM and the largest RssAnon seen, in bytes, and when, after start,
// that RssAnon was read.
func sampleMemory(pid int, start time.Time, stop <-chan struct{}) memPeaks {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memPeaks{} // the process has already gone
	}
	defer f.Close()
	buf := make([]byte, 8<<10)
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	var p memPeaks
	for {
		// procfs regenerates the file on every read from offset 0. Once the
		// process has exited the lines are gone and read as 0.
		n, _ := f.ReadAt(buf, 0)
		p.hwm = max(p.hwm, statusBytes(buf[:n], "VmHWM:"))
		if anon := statusBytes(buf[:n], "RssAnon:"); anon > p.anon {
			p.anon, p.anonAt = anon, time.Since(start)
		}
		select {
		case <-stop:
			return p
		case <-t.C:
		}
	}
}

// statusBytes extracts a "key: N kB" line of /proc/pid/status, in bytes; 0
// when absent.
func statusBytes(status []byte, key string) int64 {
	i := bytes.Index(status, []byte(key))
	if i < 0 {
		return 0
	}
	line, _, _ := bytes.Cut(status[i+len(key):], []byte("\n"))
	kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(line)), " kB"), 10, 64)
	if err != nil {
		return 0
	}
	return kb << 10
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// runQuiet runs a helper command whose cost is not measured, such as a build.
func runQuiet(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.Bytes(), 4096))
	}
	return strings.TrimSpace(out.String()), nil
}
