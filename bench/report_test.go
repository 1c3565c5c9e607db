package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFormatting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		got, want string
	}{
		{fmtDur(0), "-"},
		{fmtDur(412 * time.Microsecond), "412µs"},
		{fmtDur(2345 * time.Microsecond), "2.35ms"},
		{fmtDur(123456 * time.Microsecond), "123.5ms"},
		{fmtDur(1500 * time.Millisecond), "1.50s"},
		{fmtRate(0), "-"},
		{fmtRate(12.34), "12.3/s"},
		{fmtRate(9120.4), "9120/s"},
		{fmtRatio(0.3456), "0.35"},
		{fmtRatio(0), "-"},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, tc.got)
	}
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	rows := []Row{
		{Scenario: "GET by id", Throughput: 3000, P50: Millis(2 * time.Millisecond), P99: Millis(9 * time.Millisecond),
			Baseline: "pgbench -S 9000/s", Ratio: 0.333, Target: ">= 0.35 x baseline", Status: judge(false)},
		{Scenario: "node-red deploy", Target: "p50 <= 1.0 x node-red", Status: statusSkipped, Note: "npm unreachable"},
	}
	var b strings.Builder
	require.NoError(t, WriteTable(&b, rows))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	require.Len(t, lines, 4, "header, two rows, one note")
	require.True(t, strings.HasPrefix(lines[0], "scenario"))
	// Columns line up: every row's "p50" column starts where the header's does.
	col := strings.Index(lines[0], "p50")
	require.Equal(t, "2.00ms", strings.Fields(lines[1][col:])[0])
	require.Contains(t, lines[1], "NOT MET")
	require.Contains(t, lines[2], "skipped [1]")
	require.Equal(t, "[1] npm unreachable", lines[3])

	var md strings.Builder
	require.NoError(t, WriteMarkdown(&md, rows))
	require.Contains(t, md.String(), "| GET by id | 3000/s | 2.00ms | 9.00ms | pgbench -S 9000/s | 0.33 | - | >= 0.35 x baseline | NOT MET |")
}

func TestSaveJSON(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := &Report{StartedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Rows: []Row{{Scenario: "x", P99: Millis(1500 * time.Microsecond), Target: "p99 < 15ms", Status: statusMet}}}
	path, err := r.Save(filepath.Join(dir, "results"))
	require.NoError(t, err)
	require.Equal(t, "20260102T030405Z.json", filepath.Base(path))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var back struct {
		Rows []map[string]any `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(b, &back))
	require.InDelta(t, 1.5, back.Rows[0]["p99Ms"], 1e-9)
	require.Equal(t, "met", back.Rows[0]["status"])
}

func TestTopLines(t *testing.T) {
	t.Parallel()
	out := []byte("File: bench\nType: cpu\nDuration: 1s\n      flat  flat%\n a\n b\n c\n")
	require.Equal(t, "Duration: 1s\n      flat  flat%\n a\n b\n", topLines(out, 2))
}

// Three runs of a row become their median, with the spread; a row of one run stays as it is.
func TestMergeRuns(t *testing.T) {
	t.Parallel()
	get := func(ratio float64, status string) Row {
		return Row{Scenario: "GET", Ratio: ratio, Status: status}
	}
	lag := func(p99 time.Duration) Row { return Row{Scenario: "lag", P99: Millis(p99)} }
	rss := func(mib int64, status string) Row { return Row{Scenario: "rss", PeakBytes: mib << 20, Status: status} }
	rows := mergeRuns([][]Row{
		{get(0.30, statusNotMet), lag(3 * time.Millisecond), rss(140, statusMet)},
		{get(0.50, statusMet), lag(time.Millisecond), rss(170, statusNotMet), {Scenario: "once", Status: statusSkipped}},
		{get(0.40, statusMet), lag(2 * time.Millisecond), rss(139, statusMet)},
	})
	require.Len(t, rows, 4)
	// A memory row is the run with the median peak, not whichever came second.
	require.Equal(t, "rss", rows[2].Scenario)
	require.EqualValues(t, 140<<20, rows[2].PeakBytes)
	require.Equal(t, statusMet, rows[2].Status)
	require.Equal(t, "139 MiB - 170 MiB", rows[2].Spread)
	rows = append(rows[:2], rows[3])
	require.Equal(t, "GET", rows[0].Scenario)
	require.InDelta(t, 0.40, rows[0].Ratio, 1e-9)
	require.Equal(t, statusMet, rows[0].Status)
	require.Equal(t, 3, rows[0].Runs)
	require.Equal(t, "0.30 - 0.50", rows[0].Spread)
	require.Equal(t, Millis(2*time.Millisecond), rows[1].P99)
	require.Equal(t, "1.00ms - 3.00ms", rows[1].Spread)
	require.Equal(t, "once", rows[2].Scenario)
	require.Empty(t, rows[2].Spread)
}
