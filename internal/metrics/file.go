package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/etcd-backup/etcd-backup/internal/atomicfile"
	"github.com/etcd-backup/etcd-backup/internal/smallfile"
)

// FileMode lets node-exporter, which runs as another user, read the file;
// metrics hold nothing secret.
const FileMode fs.FileMode = 0o644

// maxFileSize bounds how much of an earlier metrics file is read back.
const maxFileSize = 1 << 20

// writeFile replaces path with the run's series in the text exposition
// format. A file is rewritten whole on every run, so the last success
// series of the file it replaces are carried over: a failed run must not
// make the last success disappear.
func writeFile(path string, r *Run, o Outcome) error {
	families, err := r.registry(o, r.labels()).Gather()
	if err != nil {
		return err
	}
	earlier, err := readLastSuccess(path)
	var dir smallfile.DirError
	if errors.As(err, &dir) {
		// smallfile names a file in it to read, which would be another
		// program's metrics here.
		return fmt.Errorf("%s is a directory (node-exporter's textfile directory?): give --metrics-file a file of its own in it, e.g. %s", path, filepath.Join(path, "etcd-backup-"+r.Command+".prom"))
	}
	if err != nil {
		return err
	}
	families = carryOver(families, earlier)
	var buf bytes.Buffer
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			return fmt.Errorf("encode %s: %w", mf.GetName(), err)
		}
	}
	return atomicfile.Replace(path, buf.Bytes(), FileMode)
}

// readLastSuccess returns the last success series of the metrics file at
// path, or nil if there is none.
func readLastSuccess(path string) (*dto.MetricFamily, error) {
	data, err := readBounded(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w; remove it, or give --metrics-file a file of its own", path, err)
	}
	return families[LastSuccess], nil
}

func readBounded(path string) ([]byte, error) {
	data, err := smallfile.Read(path, maxFileSize)
	if errors.Is(err, smallfile.ErrTooLarge) {
		return nil, fmt.Errorf("read %s: larger than %d bytes, not a metrics file of etcd-backup; remove it", path, maxFileSize)
	}
	return data, err
}

// carryOver adds to families the earlier last success series with labels
// other than those of the run's own last success series.
func carryOver(families []*dto.MetricFamily, earlier *dto.MetricFamily) []*dto.MetricFamily {
	if earlier == nil {
		return families
	}
	i := slices.IndexFunc(families, func(mf *dto.MetricFamily) bool { return mf.GetName() == LastSuccess })
	if i < 0 {
		families = append(families, &dto.MetricFamily{Name: earlier.Name, Help: earlier.Help, Type: dto.MetricType_GAUGE.Enum()})
		slices.SortFunc(families, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
		i = slices.IndexFunc(families, func(mf *dto.MetricFamily) bool { return mf.GetName() == LastSuccess })
	}
	mf := families[i]
	for _, m := range earlier.Metric {
		if !slices.ContainsFunc(mf.Metric, func(own *dto.Metric) bool { return sameLabels(own, m) }) {
			mf.Metric = append(mf.Metric, &dto.Metric{Label: m.Label, Gauge: &dto.Gauge{Value: gaugeValue(m)}})
		}
	}
	return families
}

func gaugeValue(m *dto.Metric) *float64 {
	v := m.GetGauge().GetValue()
	if m.Untyped != nil {
		v = m.GetUntyped().GetValue()
	}
	return &v
}

func sameLabels(a, b *dto.Metric) bool {
	return slices.EqualFunc(sortedLabels(a), sortedLabels(b), func(x, y *dto.LabelPair) bool {
		return x.GetName() == y.GetName() && x.GetValue() == y.GetValue()
	})
}

func sortedLabels(m *dto.Metric) []*dto.LabelPair {
	return slices.SortedFunc(slices.Values(m.Label), func(x, y *dto.LabelPair) int { return strings.Compare(x.GetName(), y.GetName()) })
}
