package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Status words of a row, as the table prints them.
const (
	statusMet          = "met"
	statusNotMet       = "NOT MET"
	statusNotAvailable = "not available"
	statusSkipped      = "skipped"
)

// Row is one line of the result table: a scenario, what it measured, the baseline it is
// compared with and whether it met its target.
type Row struct {
	Scenario string `json:"scenario"`
	// Throughput is operations per second; zero when the scenario measures latency only.
	Throughput float64 `json:"throughputPerSec,omitempty"`
	Ops        uint64  `json:"ops,omitempty"`
	Errors     uint64  `json:"errors,omitempty"`
	P50        Millis  `json:"p50Ms,omitempty"`
	P99        Millis  `json:"p99Ms,omitempty"`
	// Baseline names what the figure is compared with and its value, e.g. "pgbench -S 9120/s".
	Baseline string  `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
	Target   string  `json:"target"`
	Status   string  `json:"status"`
	Note     string  `json:"note,omitempty"`
	// Runs is how many runs the row is the median of; Spread is their lowest and highest
	// figure (the ratio, or the p99 of rows without one).
	Runs   int    `json:"runs,omitempty"`
	Spread string `json:"spread,omitempty"`
	// PeakBytes is the figure of a memory row (its Baseline says it too).
	PeakBytes int64 `json:"peakBytes,omitempty"`
}

// figure is what a row is ranked by across runs: its ratio, else its p99, else its peak.
func (r Row) figure() float64 {
	switch {
	case r.Ratio != 0:
		return r.Ratio
	case r.P99 != 0:
		return float64(r.P99)
	}
	return float64(r.PeakBytes)
}

func (r Row) fmtFigure(v float64) string {
	if r.Ratio != 0 {
		return fmtRatio(v)
	}
	if r.P99 == 0 && r.PeakBytes != 0 {
		return fmtMiB(int64(v))
	}
	return fmtDur(time.Duration(v))
}

// mergeRuns turns the rows of several runs into one row per scenario, in the order they
// first appear: the run whose figure is the median (its status and note with it), and
// the spread of the figure over the runs.
func mergeRuns(runs [][]Row) []Row {
	var (
		order  []string
		byName = map[string][]Row{}
	)
	for _, rows := range runs {
		for _, r := range rows {
			if _, ok := byName[r.Scenario]; !ok {
				order = append(order, r.Scenario)
			}
			byName[r.Scenario] = append(byName[r.Scenario], r)
		}
	}
	out := make([]Row, 0, len(order))
	for _, name := range order {
		rows := byName[name]
		slices.SortStableFunc(rows, func(a, b Row) int {
			switch fa, fb := a.figure(), b.figure(); {
			case fa < fb:
				return -1
			case fa > fb:
				return 1
			}
			return 0
		})
		m := rows[(len(rows)-1)/2]
		m.Runs = len(rows)
		if len(rows) > 1 && (rows[0].figure() != 0 || rows[len(rows)-1].figure() != 0) {
			m.Spread = rows[0].fmtFigure(rows[0].figure()) + " - " + rows[0].fmtFigure(rows[len(rows)-1].figure())
		}
		out = append(out, m)
	}
	return out
}

// Millis is a duration that marshals as fractional milliseconds, the unit of the JSON.
type Millis time.Duration

// MarshalJSON implements json.Marshaler.
func (m Millis) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%.3f", float64(m)/1e6)), nil
}

// Baseline is one raw-PostgreSQL measurement of the run.
type Baseline struct {
	Name       string  `json:"name"`
	Command    string  `json:"command"`
	Throughput float64 `json:"throughputPerSec"`
	P50        Millis  `json:"p50Ms,omitempty"`
	P99        Millis  `json:"p99Ms,omitempty"`
	Note       string  `json:"note,omitempty"`
}

// Report is the whole run, as written to bench/results/<timestamp>.json.
type Report struct {
	StartedAt   time.Time         `json:"startedAt"`
	Elapsed     string            `json:"elapsed"`
	Quick       bool              `json:"quick"`
	Machine     map[string]string `json:"machine"`
	Postgres    map[string]string `json:"postgres"`
	Concurrency int               `json:"concurrency"`
	Duration    string            `json:"durationPerScenario"`
	Baselines   []Baseline        `json:"baselines"`
	Rows        []Row             `json:"rows"`
	Notes       []string          `json:"notes,omitempty"`
	Profiles    []string          `json:"profiles,omitempty"`
}

// judge returns the status word for a target that is met when ok.
func judge(ok bool) string {
	if ok {
		return statusMet
	}
	return statusNotMet
}

// fmtDur prints a latency with three significant digits in the unit that suits it.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// fmtRate prints operations per second.
func fmtRate(r float64) string {
	switch {
	case r <= 0:
		return "-"
	case r < 100:
		return fmt.Sprintf("%.1f/s", r)
	default:
		return fmt.Sprintf("%.0f/s", r)
	}
}

func fmtRatio(r float64) string {
	if r <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}

// WriteTable prints the rows as one aligned table, then the notes of the rows that have
// one, numbered, so the table itself stays narrow.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tthroughput\tp50\tp99\tbaseline\tratio (median)\tspread\ttarget\tmet")
	var notes []string
	for _, r := range rows {
		status := r.Status
		if r.Note != "" {
			notes = append(notes, r.Note)
			status = fmt.Sprintf("%s [%d]", status, len(notes))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, fmtRate(r.Throughput),
			fmtDur(time.Duration(r.P50)), fmtDur(time.Duration(r.P99)), dash(r.Baseline), fmtRatio(r.Ratio), dash(r.Spread), r.Target, status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i, n := range notes {
		if _, err := fmt.Fprintf(w, "[%d] %s\n", i+1, n); err != nil {
			return err
		}
	}
	return nil
}

// WriteMarkdown prints the rows as a Markdown table, for docs/performance.md.
func WriteMarkdown(w io.Writer, rows []Row) error {
	var b strings.Builder
	b.WriteString("| scenario | throughput | p50 | p99 | baseline | ratio (median) | spread | target | met |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Scenario, fmtRate(r.Throughput),
			fmtDur(time.Duration(r.P50)), fmtDur(time.Duration(r.P99)), dash(r.Baseline), fmtRatio(r.Ratio), dash(r.Spread),
			strings.ReplaceAll(r.Target, "|", `\|`), r.Status)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteFacts prints the machine and PostgreSQL facts, sorted, one per line.
func WriteFacts(w io.Writer, title string, facts map[string]string) {
	fmt.Fprintf(w, "%s:\n", title)
	for _, k := range sortedKeys(facts) {
		fmt.Fprintf(w, "  %-22s %s\n", k, facts[k])
	}
}

// Save writes the report as indented JSON to dir/<timestamp>.json and returns the path.
func (r *Report) Save(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create results dir: %w", err)
	}
	path := filepath.Join(dir, r.StartedAt.UTC().Format("20060102T150405Z")+".json")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("write report: %w", err)
	}
	return path, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
