package web

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestVisible: text stored before names and notes refused deceptive characters, and any
// certificate subject, is shown with those characters as escapes; everything else as is.
func TestVisible(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Internal Root CA":       "Internal Root CA",
		"invoice\u202Efdp.exe":   `invoice\u202Efdp.exe`,
		"a\u2028b\u2029c":        `a\u2028b\u2029c`,
		"bell\x07":               `bell\u0007`,
		"line one\nline\ttwo":    "line one\nline\ttwo",
		"Корневой ЦС — شهادة":    "Корневой ЦС — شهادة",
		"\u2066isolated\u2069":   `\u2066isolated\u2069`,
		"zero\u200Dwidth joiner": "zero\u200Dwidth joiner",
	} {
		require.Equal(t, want, visible(in), "%q", in)
	}
	require.Equal(t, `CN=evil\u202Etxt,<wbr>O=x`, string(breakDN("CN=evil\u202Etxt,O=x")))
}
