package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// diagInterval is the progress interval of the extra save that times the
// stream: fine enough to place its end within a tenth of a second.
const diagInterval = 100 * time.Millisecond

// savePhases splits one save's wall time at the lines it logs, so the
// report shows where the time goes without a profiler.
type savePhases struct {
	ok bool
	d  [phaseCount]time.Duration
}

const phaseCount = 5

var phaseNames = [phaseCount]string{
	"start-up, discovery, connect",
	"facts and preflight checks",
	"snapshot stream + fsync + bbolt check (archive alongside)",
	"commit, backup.json, results",
	"exit",
}

// phaseEnds are the log lines that end the first four phases; the process
// exit ends the last.
var phaseEnds = [phaseCount - 1]func(msg string) bool{
	func(m string) bool { return m == "using etcd member" },
	func(m string) bool { return m == "preflight checks passed" },
	func(m string) bool { return strings.HasPrefix(m, "Snapshot saved at ") },
	func(m string) bool {
		return strings.HasPrefix(m, "snapshot db and kube resources are successfully saved")
	},
}

// logLine is the part of a JSON log record the bench reads.
type logLine struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
	Done int64     `json:"done"` // progress lines only
}

func parseLog(log []byte) []logLine {
	var lines []logLine
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && !l.Time.IsZero() {
			lines = append(lines, l)
		}
	}
	return lines
}

// parsePhases finds the phase boundaries in a save's JSON log; ok is false
// if a line is missing (the log wording changed).
func parsePhases(log []byte, start, end time.Time) savePhases {
	lines := parseLog(log)
	var p savePhases
	prev := start
	for i, isEnd := range phaseEnds {
		at := -1
		for j, l := range lines {
			if isEnd(l.Msg) {
				at = j
				break
			}
		}
		if at < 0 {
			return savePhases{}
		}
		p.d[i] = lines[at].Time.Sub(prev)
		prev = lines[at].Time
	}
	p.d[phaseCount-1] = end.Sub(prev)
	p.ok = true
	return p
}

// streamEnd places the end of the snapshot stream inside a save, from its
// progress lines, relative to the start of the process.
type streamEnd struct {
	ok        bool
	preflight time.Duration // preflight passed: the stream is requested next
	end       time.Duration // estimated end of the stream
	saved     time.Duration // "Snapshot saved": fsync and checks done
	anonAt    time.Duration // when anonymous memory peaked
}

// parseStreamEnd places the end of the stream between the last progress
// line short of size and the first that reached it, interpolating at the
// rate of the two lines before; without such a line it extrapolates from the
// last two.
func parseStreamEnd(log []byte, start time.Time, size int64) streamEnd {
	var s streamEnd
	var prog []logLine
	for _, l := range parseLog(log) {
		switch {
		case phaseEnds[1](l.Msg):
			s.preflight = l.Time.Sub(start)
		case phaseEnds[2](l.Msg):
			s.saved = l.Time.Sub(start)
		case strings.HasPrefix(l.Msg, "snapshot: ") && l.Done > 0:
			prog = append(prog, l)
		}
	}
	if s.saved == 0 || s.preflight == 0 {
		return streamEnd{}
	}
	full := slices.IndexFunc(prog, func(l logLine) bool { return l.Done >= size })
	last := len(prog) - 1 // the last line short of size
	if full >= 0 {
		last = full - 1
	}
	if last < 1 {
		if full < 0 {
			return streamEnd{}
		}
		// Done within two lines: the first full one bounds it.
		s.end, s.ok = prog[full].Time.Sub(start), true
		return s
	}
	a, b := prog[last-1], prog[last]
	rate := float64(b.Done-a.Done) / b.Time.Sub(a.Time).Seconds()
	if rate <= 0 {
		return streamEnd{}
	}
	end := b.Time.Add(time.Duration(float64(size-b.Done) / rate * float64(time.Second)))
	if full >= 0 && end.After(prog[full].Time) {
		end = prog[full].Time
	}
	s.end, s.ok = end.Sub(start), true
	return s
}
