package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/destination/oci"
	"github.com/etcd-backup/etcd-backup/internal/exitcode"
	"github.com/etcd-backup/etcd-backup/internal/logging"
	"github.com/etcd-backup/etcd-backup/internal/metrics"
	"github.com/etcd-backup/etcd-backup/internal/results"
)

// envPrefix is prepended to a flag's name, upper-cased with - as _, to give
// the environment variable read when the flag is not set.
const envPrefix = "ETCD_BACKUP_"

// standardEnv lists further variables a flag reads, after its own, because
// operators and pipelines already set them for etcdctl and the downward API.
var standardEnv = map[string]string{
	"endpoints": "ETCDCTL_ENDPOINTS",
	"cacert":    "ETCDCTL_CACERT",
	"cert":      "ETCDCTL_CERT",
	"key":       "ETCDCTL_KEY",
	"node-name": "NODE_NAME",
}

// command is one subcommand.
type command struct {
	name string
	args []string // positional argument names; each also read from ETCD_BACKUP_<NAME>
	// lastOptional lets the last argument be missing; the command gets "".
	lastOptional bool
	summary      string
	// setup defines the command's own flags and returns what runs it.
	setup func(fs *pflag.FlagSet) runFunc
}

type runFunc func(ctx context.Context, env *env, args []string) error

// env is what every command gets besides its flags.
type env struct {
	log        *slog.Logger
	stdout     io.Writer
	resultsDir string
	timeout    time.Duration
	lookup     func(string) (string, bool)
	// metrics is what the run found out, for --metrics-push-url and
	// --metrics-file; commands fill it in as they learn.
	metrics *metrics.Run
}

// commands lists the subcommands in the order help shows them.
func commands() []*command {
	return []*command{saveCommand(), uploadCommand(), listCommand(), downloadCommand(), verifyCommand(), pruneCommand(), versionCommand()}
}

// globals are the flags every command takes.
type globals struct {
	timeout    time.Duration
	resultsDir string
	logFormat  string
	metrics    *metricsFlags // nil for commands that do not report
}

func addGlobals(fs *pflag.FlagSet) *globals {
	g := &globals{}
	fs.DurationVar(&g.timeout, "timeout", time.Hour, "overall deadline for the command (0: none)")
	fs.StringVar(&g.resultsDir, "results-dir", "", "directory to write Tekton/Argo result files into")
	fs.StringVar(&g.logFormat, "log-format", logging.Text, "log format: text or json")
	return g
}

// newFlagSet builds the flag set of cmd with the global flags, and the
// runner; tests use it to check that YAML only passes flags that exist.
func newFlagSet(cmd *command) (*pflag.FlagSet, *globals, runFunc) {
	fs := pflag.NewFlagSet("etcd-backup "+cmd.name, pflag.ContinueOnError)
	fs.SortFlags = false
	run := cmd.setup(fs)
	g := addGlobals(fs)
	if slices.Contains(reportingCommands, cmd.name) {
		g.metrics = addMetricsFlags(fs)
	}
	fs.VisitAll(func(f *pflag.Flag) {
		f.Usage += " [$" + strings.Join(envNames(f.Name), ", $") + "]"
	})
	return fs, g, run
}

func envNames(flag string) []string {
	names := []string{envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
	if std, ok := standardEnv[flag]; ok {
		names = append(names, std)
	}
	return names
}

// applyEnv sets each flag not given on the command line from the first of
// its environment variables that is set. Flags win over environment.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		for _, name := range envNames(f.Name) {
			if v, ok := lookup(name); ok && v != "" {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("$%s: %w", name, err))
				}
				return
			}
		}
	})
	return errors.Join(errs...)
}

// positional fills missing positional arguments from the environment.
func positional(cmd *command, args []string, lookup func(string) (string, bool)) ([]string, error) {
	if len(args) > len(cmd.args) {
		return nil, fmt.Errorf("too many arguments: want %s", strings.Join(cmd.args, " "))
	}
	out := slices.Clone(args)
	for _, name := range cmd.args[len(args):] {
		v, ok := lookup(envPrefix + name)
		if (!ok || v == "") && !(cmd.lastOptional && len(out) == len(cmd.args)-1) {
			return nil, fmt.Errorf("missing %s (argument, or $%s%s)", name, envPrefix, name)
		}
		out = append(out, v)
	}
	return out, nil
}

func run(ctx context.Context, argv []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	// Errors before the flags are parsed are already in the format the
	// user asked for: a log pipeline sees only JSON.
	fail := earlyLogger(argv, lookup, stderr)
	argv = commandFirst(argv)
	if len(argv) == 0 || argv[0] == "-h" || argv[0] == "--help" || argv[0] == "help" {
		printUsage(stdout)
		if len(argv) == 0 {
			return exitcode.Usage
		}
		return exitcode.OK
	}
	i := slices.IndexFunc(commands(), func(c *command) bool { return c.name == argv[0] })
	if i < 0 {
		fail(fmt.Sprintf("etcd-backup: unknown command %q; run 'etcd-backup --help'", argv[0]))
		return exitcode.Usage
	}
	cmd := commands()[i]
	fs, g, runCmd := newFlagSet(cmd)
	fs.SetOutput(io.Discard)
	usageErr := func(err error) int {
		fail(fmt.Sprintf("etcd-backup %s: %v; run 'etcd-backup %s --help'", cmd.name, err, cmd.name))
		return exitcode.Usage
	}
	if err := fs.Parse(argv[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printCommandUsage(stdout, cmd, fs)
			return exitcode.OK
		}
		return usageErr(err)
	}
	if err := applyEnv(fs, lookup); err != nil {
		return usageErr(err)
	}
	args, err := positional(cmd, fs.Args(), lookup)
	if err != nil {
		return usageErr(err)
	}
	log, err := logging.New(stderr, g.logFormat)
	if err != nil {
		return usageErr(err)
	}
	// containers/image's lines follow --log-format too.
	oci.CaptureLibraryLog(log)
	sinks, err := g.metrics.sinks()
	if err != nil {
		return usageErr(err)
	}
	if g.timeout < 0 {
		return usageErr(fmt.Errorf("--timeout %s is negative", g.timeout))
	}
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, g.timeout, fmt.Errorf("--timeout %s reached", g.timeout))
		defer cancel()
	}
	// Outputs are checked before any work: a result that cannot be written
	// must not fail a command after its backup or upload is done.
	if err := results.CheckDir(g.resultsDir); err != nil {
		log.Error(err.Error())
		return exitcode.Of(err)
	}
	report := &metrics.Run{Command: cmd.name, Start: time.Now()}
	err = runCmd(ctx, &env{log: log, stdout: stdout, resultsDir: g.resultsDir, timeout: g.timeout, lookup: lookup, metrics: report}, args)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		log.Error(err.Error())
	}
	code := exitcode.Of(err)
	sinks.Report(ctx, log, report, metrics.Outcome{End: time.Now(), ExitCode: code})
	return code
}

// earlyLogger returns how to report an error found before the flags are
// parsed: a JSON log line when --log-format or $ETCD_BACKUP_LOG_FORMAT asks
// for json, else a plain line.
func earlyLogger(argv []string, lookup func(string) (string, bool), stderr io.Writer) func(string) {
	format, _ := lookup(envPrefix + "LOG_FORMAT")
	for i, a := range argv {
		if a == "--" {
			break
		}
		if v, ok := strings.CutPrefix(a, "--log-format="); ok {
			format = v
		} else if a == "--log-format" && i+1 < len(argv) {
			format = argv[i+1]
		}
	}
	if format == logging.JSON {
		log, _ := logging.New(stderr, logging.JSON)
		return func(msg string) { log.Error(msg) }
	}
	return func(msg string) { fmt.Fprintln(stderr, msg) }
}

// commandFirst moves global flags given before the command (etcd-backup
// --log-format json upload ...) after it, where the command's flag set
// parses them with its own.
func commandFirst(argv []string) []string {
	fs := pflag.NewFlagSet("", pflag.ContinueOnError)
	addGlobals(fs)
	addMetricsFlags(fs)
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if a == "-h" || a == "--help" || !strings.HasPrefix(a, "-") {
			if i == 0 {
				return argv
			}
			return slices.Concat(argv[i:i+1], argv[:i], argv[i+1:])
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if f := fs.Lookup(name); f != nil && f.Value.Type() != "bool" && !hasValue {
			i++ // its value
		}
	}
	return argv
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: etcd-backup [global flags] <command> [flags]")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nGlobal flags (before or after the command): --timeout, --results-dir, --log-format, and on save, upload, verify and prune --metrics-push-url and --metrics-file.")
	fmt.Fprintln(w, "Run 'etcd-backup <command> --help' for its flags.")
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 failure, 2 usage, 3 preflight refused, 4 verification failed, 5 no good backup recent enough (verify --max-age).")
}

func printCommandUsage(w io.Writer, cmd *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "Usage: etcd-backup %s [flags] %s\n\n%s\n\n", cmd.name, strings.Join(cmd.args, " "), cmd.summary)
	for _, a := range cmd.args {
		fmt.Fprintf(w, "%s may also be given as $%s%s.\n", a, envPrefix, a)
	}
	fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
	if about := commandAbout[cmd.name]; about != "" {
		fmt.Fprintf(w, "\n%s\n", about)
	}
	if ex := commandExamples[cmd.name]; len(ex) > 0 {
		fmt.Fprintf(w, "\nExamples:\n")
		for _, e := range ex {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}

// usage marks err as a usage error (exit 2).
func usage(format string, a ...any) error {
	return exitcode.With(exitcode.Usage, fmt.Errorf(format, a...))
}
