package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"go.etcd.io/etcd/api/v3/version"
)

// Targets of SPEC section 10.
const (
	maxSaveVsPipeline = 0.90
	maxSaveVsEtcdctl  = 1.10
	maxAnon           = 64 << 20
	// maxEndToEnd reads "save plus upload end to end well under the sum of
	// the two".
	maxEndToEnd = 0.90
	// minEncryptedVsPlain: encrypting as it streams keeps at least this
	// share of the unencrypted upload's throughput.
	minEncryptedVsPlain = 0.80
	// flatSlack is how much peak anonymous memory may grow from the smallest
	// to the largest database and still count as flat: sampling and the
	// garbage collector's pacing move it by a few MiB from run to run.
	flatSlack     = 4 << 20
	flatSlackFrac = 0.10
)

// verdicts prints one PASS or FAIL line per target and counts them.
type verdicts struct{ pass, fail int }

func (v *verdicts) check(ok bool, format string, args ...any) {
	word := "PASS"
	if ok {
		v.pass++
	} else {
		word = "FAIL"
		v.fail++
	}
	fmt.Printf("- **%s** %s\n", word, fmt.Sprintf(format, args...))
}

func (v *verdicts) summary() {
	fmt.Printf("\n%d targets met, %d missed.\n", v.pass, v.fail)
}

func printFacts(ctx context.Context, bin string, tools etcdTools) {
	fmt.Println("## Machine")
	fmt.Println()
	fmt.Printf("- CPUs: %d × %s\n", runtime.NumCPU(), procField("/proc/cpuinfo", "model name"))
	fmt.Printf("- memory: %s; kernel %s\n", procField("/proc/meminfo", "MemTotal"), kernel())
	fmt.Printf("- load average at start: %s (other work on the machine skews wall times; ratios come from alternating runs)\n", loadAvg())
	fmt.Printf("- Go %s; etcd server %s embedded in the bench process; official etcdctl and etcdutl %s\n", strings.TrimPrefix(runtime.Version(), "go"), version.Version, tools.version)
	v, err := runQuiet(ctx, "", nil, bin, "version")
	if err != nil {
		v = "unknown: " + err.Error()
	}
	fmt.Printf("- %s: %s\n", bin, strings.ReplaceAll(v, "\n", "; "))
	fmt.Println()
}

func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// printSize prints the table and the verdicts of one database size.
func printSize(res sizeResult, v *verdicts) {
	n := len(res.runs[ourSave])
	fmt.Printf("## %s database\n\n", sizeLabel(res.target))
	fmt.Printf("Member DB size %s, snapshot %s. %s of each, alternating, after one warm-up run of each; "+
		"times are medians (min–max), memory the largest of the runs.\n\n", mib(res.dbSize), mib(res.snapSize), measuredRuns(n))

	walls, cpus, rss, anon := [contenders][]float64{}, [contenders][]float64{}, [contenders]int64{}, [contenders]int64{}
	for c := range contenders {
		for _, u := range res.runs[c] {
			walls[c] = append(walls[c], u.wall.Seconds())
			cpus[c] = append(cpus[c], u.cpu.Seconds())
			rss[c], anon[c] = max(rss[c], u.peakRSS), max(anon[c], u.peakAnon)
		}
	}
	vsEtcdctl := median(roundRatios(walls[ourSave], walls[bareEtcdctl]))
	vsPipeline := median(roundRatios(walls[ourSave], walls[scriptPipeline]))

	rows := [][]string{{"measure", ourSave.String(), bareEtcdctl.String(), scriptPipeline.String(), "save ÷ etcdctl", "save ÷ pipeline"}}
	row := func(name string, cell func(c contender) string, r1, r2 string) {
		cells := []string{name}
		for c := range contenders {
			cells = append(cells, cell(c))
		}
		rows = append(rows, append(cells, r1, r2))
	}
	row("wall time, s", func(c contender) string {
		return fmt.Sprintf("%.2f (%.2f–%.2f)", median(walls[c]), slices.Min(walls[c]), slices.Max(walls[c]))
	}, ratio(vsEtcdctl), ratio(vsPipeline))
	mbps := func(c contender) float64 { return float64(res.snapSize) / (1 << 20) / median(walls[c]) }
	row("throughput, MiB/s", func(c contender) string { return fmt.Sprintf("%.0f", mbps(c)) },
		ratio(mbps(ourSave)/mbps(bareEtcdctl)), ratio(mbps(ourSave)/mbps(scriptPipeline)))
	row("CPU time (user + sys), s", func(c contender) string { return fmt.Sprintf("%.2f", median(cpus[c])) },
		ratio(median(cpus[ourSave])/median(cpus[bareEtcdctl])), ratio(median(cpus[ourSave])/median(cpus[scriptPipeline])))
	row(fmt.Sprintf("peak RSS, MiB (VmHWM, read every %s)", sampleEvery), func(c contender) string { return mibN(rss[c]) },
		ratio(float64(rss[ourSave])/float64(rss[bareEtcdctl])), ratio(float64(rss[ourSave])/float64(rss[scriptPipeline])))
	row(fmt.Sprintf("peak anon, MiB (RssAnon, sampled every %s)", sampleEvery), func(c contender) string { return mibN(anon[c]) },
		ratio(float64(anon[ourSave])/float64(anon[bareEtcdctl])), ratio(float64(anon[ourSave])/float64(anon[scriptPipeline])))
	printTable(rows)
	fmt.Println("\nRatios of times are the median of the per-round ratios. The pipeline's time and CPU are the sums of its three steps, " +
		"its memory the largest of them. RSS counts mapped file pages (etcdutl maps the whole snapshot); anonymous memory does not.")
	printPhases(res, median(walls[bareEtcdctl]))
	fmt.Println()

	v.check(vsPipeline <= maxSaveVsPipeline, "save ≤ %.2f × script pipeline: %.2f (%.2f s against %.2f s)",
		maxSaveVsPipeline, vsPipeline, median(walls[ourSave]), median(walls[scriptPipeline]))
	v.check(vsEtcdctl <= maxSaveVsEtcdctl, "save ≤ %.2f × bare etcdctl: %.2f (%.2f s against %.2f s)",
		maxSaveVsEtcdctl, vsEtcdctl, median(walls[ourSave]), median(walls[bareEtcdctl]))
	v.check(anon[ourSave] <= maxAnon, "save peak anonymous memory ≤ %s: %s (sampled)", mib(maxAnon), mib(anon[ourSave]))
	fmt.Println()
	if res.upload != nil {
		printUpload(res, median(walls[ourSave]), v)
	}
}

// printUpload prints the upload table and verdicts of one database size.
func printUpload(res sizeResult, saveWall float64, v *verdicts) {
	u := res.upload
	fmt.Printf("### %s database: upload to the Cloud Storage emulator\n\n", sizeLabel(res.target))
	fmt.Printf("fake-gcs-server in the bench process, HTTP on loopback, objects on disk. The backup is %s (snapshot %s). "+
		"%s of each, alternating, after one warm-up write; the bench process keeps the heap the emulator faults in (see keepHeap).\n\n", mib(u.bytes), mib(u.snapBytes), measuredRuns(len(u.upload)))
	var up, enc, wr, e2e []float64
	var cpu, encCPU []float64
	var rss, anon, encRSS, encAnon int64
	for i, x := range u.upload {
		up, wr, e2e = append(up, x.wall.Seconds()), append(wr, u.writer[i].Seconds()), append(e2e, u.endToEnd[i].wall.Seconds())
		cpu = append(cpu, x.cpu.Seconds())
		rss, anon = max(rss, x.peakRSS), max(anon, x.peakAnon)
		e := u.encrypted[i]
		enc, encCPU = append(enc, e.wall.Seconds()), append(encCPU, e.cpu.Seconds())
		encRSS, encAnon = max(encRSS, e.peakRSS), max(encAnon, e.peakAnon)
	}
	upRate := func(wall float64) float64 { return float64(u.bytes) / (1 << 20) / wall }
	wrRate := func(wall float64) float64 { return float64(u.snapBytes) / (1 << 20) / wall }
	rates := make([]float64, len(up))
	for i := range up {
		rates[i] = upRate(up[i]) / wrRate(wr[i])
	}
	vsWriter := median(rates)
	// Both uploads send the same files: throughput ÷ throughput is the
	// inverse ratio of their wall times.
	encVsPlain := median(roundRatios(up, enc))
	printTable([][]string{
		{"measure", "etcd-backup upload", "one storage.Writer (snapshot only)", "upload ÷ Writer", "upload --encrypt-to", "encrypted ÷ upload"},
		{"wall time, s", spread(up), spread(wr), ratio(median(roundRatios(up, wr))), spread(enc), ratio(median(roundRatios(enc, up)))},
		{"throughput, MiB/s", fmt.Sprintf("%.0f", upRate(median(up))), fmt.Sprintf("%.0f", wrRate(median(wr))), ratio(vsWriter), fmt.Sprintf("%.0f", upRate(median(enc))), ratio(encVsPlain)},
		{"CPU time (user + sys), s", fmt.Sprintf("%.2f", median(cpu)), "(in the bench process)", "", fmt.Sprintf("%.2f", median(encCPU)), ""},
		{fmt.Sprintf("peak RSS, MiB (VmHWM, read every %s)", sampleEvery), mibN(rss), "", "", mibN(encRSS), ""},
		{fmt.Sprintf("peak anon, MiB (RssAnon, sampled every %s)", sampleEvery), mibN(anon), "", "", mibN(encAnon), ""},
	})
	fmt.Println("\nupload's throughput counts every file it sends over its whole run, which includes checking each file as it is sent; " +
		"the throughput ratio is the median of the per-round ratios.")
	send, store := splitTook(u.uploadTook)
	esend, estore := splitTook(u.encryptedTook)
	wsend, wstore := splitTook(u.writerTook)
	fmt.Printf("where the snapshot's time went, timed at the joiner (medians): upload sent it in %s s, then the emulator stored it in %s s; "+
		"the encrypted upload sent it in %s s, then the emulator stored it in %s s; "+
		"the Writer sent it in %s s, then the emulator stored it in %s s.\n", spread(send), spread(store), spread(esend), spread(estore), spread(wsend), spread(wstore))
	upWall, e2eWall := median(up), median(e2e)
	sum := saveWall + upWall
	fmt.Printf("save then upload, end to end (two processes, as a Task's two steps): %s s; save alone %.2f s (above), upload alone %.2f s: "+
		"end to end ÷ save alone %.2f, ÷ their sum %.2f.\n\n", spread(e2e), saveWall, upWall, e2eWall/saveWall, e2eWall/sum)

	v.check(vsWriter >= 1, "upload throughput ≥ one plain storage.Writer: %.2f (%.0f against %.0f MiB/s)", vsWriter, upRate(median(up)), wrRate(median(wr)))
	v.check(anon <= maxAnon, "upload peak anonymous memory ≤ %s: %s (sampled)", mib(maxAnon), mib(anon))
	v.check(encVsPlain >= minEncryptedVsPlain, "encrypted upload throughput ≥ %.2f × upload: %.2f (%.0f against %.0f MiB/s)",
		minEncryptedVsPlain, encVsPlain, upRate(median(enc)), upRate(median(up)))
	v.check(encAnon <= maxAnon, "encrypted upload peak anonymous memory ≤ %s: %s (sampled)", mib(maxAnon), mib(encAnon))
	v.check(e2eWall <= maxEndToEnd*sum, "save + upload end to end ≤ %.2f × (save alone + upload alone): %.2f (%.2f s against %.2f s)",
		maxEndToEnd, e2eWall/sum, e2eWall, sum)
	fmt.Println()
	if u.registry != nil {
		printRegistry(res, v)
	}
}

// spread is the median of xs and their range.
func spread(xs []float64) string {
	return fmt.Sprintf("%.2f (%.2f–%.2f)", median(xs), slices.Min(xs), slices.Max(xs))
}

// printRegistry prints the registry table and verdicts of one database size.
func printRegistry(res sizeResult, v *verdicts) {
	u, g := res.upload, res.upload.registry
	fmt.Printf("### %s database: upload to an OCI registry\n\n", sizeLabel(res.target))
	fmt.Printf("The CNCF distribution registry in the bench process, plain HTTP on loopback, blobs on disk; each run to a fresh repository. "+
		"%s of each, alternating, after one warm-up PutBlob.\n\n", measuredRuns(len(g.upload)))
	var up, pb, cpu []float64
	var rss, anon int64
	for i, x := range g.upload {
		up, pb = append(up, x.wall.Seconds()), append(pb, g.putBlob[i].Seconds())
		cpu = append(cpu, x.cpu.Seconds())
		rss, anon = max(rss, x.peakRSS), max(anon, x.peakAnon)
	}
	upRate := func(wall float64) float64 { return float64(u.bytes) / (1 << 20) / wall }
	pbRate := func(wall float64) float64 { return float64(u.snapBytes) / (1 << 20) / wall }
	rates := make([]float64, len(up))
	for i := range up {
		rates[i] = upRate(up[i]) / pbRate(pb[i])
	}
	vsPutBlob := median(rates)
	printTable([][]string{
		{"measure", "etcd-backup upload docker://", "one containers/image PutBlob (snapshot only)", "upload ÷ PutBlob"},
		{"wall time, s", spread(up), spread(pb), ratio(median(roundRatios(up, pb)))},
		{"throughput, MiB/s", fmt.Sprintf("%.0f", upRate(median(up))), fmt.Sprintf("%.0f", pbRate(median(pb))), ratio(vsPutBlob)},
		{"CPU time (user + sys), s", fmt.Sprintf("%.2f", median(cpu)), "(in the bench process)", ""},
		{fmt.Sprintf("peak RSS, MiB (VmHWM, read every %s)", sampleEvery), mibN(rss), "", ""},
		{fmt.Sprintf("peak anon, MiB (RssAnon, sampled every %s)", sampleEvery), mibN(anon), "", ""},
	})
	fmt.Println()
	v.check(vsPutBlob >= 1, "registry upload throughput ≥ one plain PutBlob: %.2f (%.0f against %.0f MiB/s)", vsPutBlob, upRate(median(up)), pbRate(median(pb)))
	v.check(anon <= maxAnon, "registry upload peak anonymous memory ≤ %s: %s (sampled)", mib(maxAnon), mib(anon))
	fmt.Println()
}

// splitTook returns the send and store seconds of each upload.
func splitTook(hs []handover) (send, store []float64) {
	for _, h := range hs {
		send, store = append(send, h.send.Seconds()), append(store, h.store.Seconds())
	}
	return send, store
}

// printPhases shows where save's time goes, from its log timestamps.
func printPhases(res sizeResult, etcdctlWall float64) {
	var cols [phaseCount][]float64
	for _, p := range res.phases {
		if !p.ok {
			continue
		}
		for i, d := range p.d {
			cols[i] = append(cols[i], d.Seconds())
		}
	}
	if len(cols[0]) == 0 {
		fmt.Println("\nsave phases: the log lines that mark them were not found")
		return
	}
	parts := make([]string, phaseCount)
	for i := range cols {
		parts[i] = fmt.Sprintf("%s %.2f s", phaseNames[i], median(cols[i]))
	}
	fmt.Printf("\nsave phases (median, from its JSON log timestamps): %s.\n", strings.Join(parts, "; "))
	s := res.stream
	if !s.ok {
		fmt.Println("stream timing: too few progress lines to place the end of the stream")
		return
	}
	fmt.Printf("stream timing (one more save, progress logged every %s): snapshot requested at %.2f s, stream ended ≈ %.2f s (%.2f s, against %.2f s for all of bare etcdctl), "+
		"\"Snapshot saved\" at %.2f s: %.2f s after the stream for fsync, the bbolt check and waiting on the archive; anonymous memory peaked at %.2f s.\n",
		diagInterval, s.preflight.Seconds(), s.end.Seconds(), (s.end - s.preflight).Seconds(), etcdctlWall, s.saved.Seconds(), (s.saved - s.end).Seconds(), s.anonAt.Seconds())
}

// printFlatness checks that memory does not grow with the database.
func printFlatness(all []sizeResult, v *verdicts) {
	if len(all) < 2 {
		return
	}
	fmt.Println("## Memory as the database grows")
	fmt.Println()
	first, last := all[0], all[len(all)-1]
	flat(v, "save", first.target, last.target, peakAnon(first.runs[ourSave]), peakAnon(last.runs[ourSave]))
	if first.upload != nil && last.upload != nil {
		flat(v, "upload", first.target, last.target, peakAnon(first.upload.upload), peakAnon(last.upload.upload))
		flat(v, "encrypted upload", first.target, last.target, peakAnon(first.upload.encrypted), peakAnon(last.upload.encrypted))
		if first.upload.registry != nil && last.upload.registry != nil {
			flat(v, "registry upload", first.target, last.target, peakAnon(first.upload.registry.upload), peakAnon(last.upload.registry.upload))
		}
	}
}

func flat(v *verdicts, what string, small, large, a, b int64) {
	allowed := max(int64(flatSlack), int64(float64(a)*flatSlackFrac))
	v.check(b-a <= allowed, "%s peak anonymous memory flat: %s at %s, %s at %s (%+.1f MiB; allowed +%s)",
		what, mib(a), sizeLabel(small), mib(b), sizeLabel(large), float64(b-a)/(1<<20), mib(allowed))
}

func peakAnon(us []usage) int64 {
	var m int64
	for _, u := range us {
		m = max(m, u.peakAnon)
	}
	return m
}

// roundRatios divides a by b run by run: runs of one round saw the same load.
func roundRatios(a, b []float64) []float64 {
	r := make([]float64, min(len(a), len(b)))
	for i := range r {
		r[i] = a[i] / b[i]
	}
	return r
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func measuredRuns(n int) string {
	if n == 1 {
		return "1 measured run"
	}
	return fmt.Sprintf("%d measured runs", n)
}

func ratio(r float64) string { return fmt.Sprintf("%.2f", r) }

func mib(n int64) string  { return mibN(n) + " MiB" }
func mibN(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

func sizeLabel(n int64) string {
	if n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// printTable prints rows as a Markdown table with aligned columns; the first
// row is the header.
func printTable(rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			fmt.Fprintf(&b, "| %s%s ", c, strings.Repeat(" ", width[i]-len([]rune(c))))
		}
		fmt.Println(b.String() + "|")
	}
	line(rows[0])
	sep := make([]string, len(width))
	for i, w := range width {
		sep[i] = strings.Repeat("-", w)
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
}
